"""pipeline/layout.py: commands and benchmarks read their paths from dvc.yaml's stage commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.common import UserError
from pipeline.layout import stage_arguments, stage_path
from tests.helpers import ROOT, set_params


def test_paths_are_the_ones_the_stage_commands_pass():
    assert stage_path("fetch", "--model-dir", ROOT) == ROOT / "models/base"
    assert stage_path("train", "--out-dir", ROOT) == ROOT / "models/finetuned"
    assert stage_path("eval", "--predictions", ROOT) == ROOT / "data/eval/predictions.jsonl"
    assert stage_arguments("convert_litertlm", ROOT)["--out-dir"] == "models/litertlm"


def test_templated_paths_are_filled_in_from_params_yaml(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert stage_path("eval", "--data", tmp_path) == tmp_path / "data/formatted/eval.jsonl"
    set_params(tmp_path / "params.yaml", {"eval.split": "validation"})
    assert stage_path("eval", "--data", tmp_path) == tmp_path / "data/formatted/validation.jsonl"
    assert stage_path("convert_litertlm", "--eval-data", tmp_path) == tmp_path / "data/formatted/validation.jsonl"


def test_a_missing_file_stage_or_flag_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="run this from the repository root"):
        stage_path("eval", "--data", tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    with pytest.raises(UserError, match="has no stage 'deploy'"):
        stage_path("deploy", "--out", tmp_path)
    with pytest.raises(UserError, match="passes no --nothing"):
        stage_path("eval", "--nothing", tmp_path)
    with pytest.raises(UserError, match="params.yaml not found"):
        stage_path("eval", "--data", tmp_path)  # templated, and no params.yaml to fill it in
    assert Path(stage_path("fetch", "--raw-dir", tmp_path)) == tmp_path / "data/raw"


def test_the_readme_layout_names_every_module_of_the_tree():
    """The README's Layout section is the map of the repository: every tracked file of stages/, pipeline/,
    commands/ and bench/ is named there, under its folder."""
    import subprocess

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    tracked = subprocess.run(["git", "ls-files", "stages", "pipeline", "commands", "bench"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    missing = [f for f in tracked if Path(f).name != "__init__.py" and Path(f).name not in layout]
    assert not missing, f"README's Layout section does not name {missing}"
