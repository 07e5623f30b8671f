"""Where the pipeline keeps its files, read from dvc.yaml: the stage commands there are where paths live.

    from pipeline.layout import stage_path
    stage_path("fetch", "--model-dir")        # Path("models/base")
    stage_path("eval", "--predictions")       # Path("data/eval/predictions.jsonl")

Commands around the pipeline (demo, push, report) and the benchmarks take their default
paths from here instead of keeping copies of them; the stages themselves get every path
on their command line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.common import UserError

DVC_YAML = "dvc.yaml"


def stage_arguments(stage: str, root: Path = Path(".")) -> dict[str, str]:
    """`--flag value` pairs of a dvc.yaml stage's cmd (flags without a value are left out)."""
    import yaml

    path = Path(root) / DVC_YAML
    if not path.is_file():
        raise UserError(f"{path} not found: run this from the repository root (where dvc.yaml is)")
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise UserError(f"{path} has no stage {stage!r}: it is the project's own file, restore it from git")
    words = shlex.split(stages[stage]["cmd"])
    return {word: value for word, value in zip(words, words[1:]) if word.startswith("--") and not value.startswith("--")}


def stage_path(stage: str, flag: str, root: Path = Path(".")) -> Path:
    """The path a dvc.yaml stage passes as `flag`, relative to `root`."""
    arguments = stage_arguments(stage, root)
    if flag not in arguments:
        raise UserError(f"the {stage} stage in {Path(root) / DVC_YAML} passes no {flag}: restore dvc.yaml from git")
    value = arguments[flag]
    if "${" in value:
        raise UserError(f"the {stage} stage's {flag} is templated ({value}); pass the path explicitly")
    return Path(root) / value
