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
    return Path(root) / resolve(arguments[flag], Path(root))


def resolve(value: str, root: Path) -> str:
    """`${section.key}` in a dvc.yaml value, filled in from params.yaml as DVC fills it in."""
    import re

    from pipeline.params import PARAMS_FILE, read_yaml

    if "${" not in value:
        return value
    params = read_yaml(root / PARAMS_FILE)

    def lookup(match) -> str:
        node = params
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"dvc.yaml uses ${{{match.group(1)}}}, which {root / PARAMS_FILE} lacks: restore it")
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, value)
