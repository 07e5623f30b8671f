"""dvc.yaml knows what each stage runs: its `deps` list every project file the stage's code is made of.

A stage module's code is the module plus every project module it imports, directly or through
other project modules, at the top or inside a function (both run), and the data files those
modules open beside themselves (through `Path(__file__).with_name` with a literal name). If dvc.yaml missed one, a
change to it would not re-run the stage and `dvc repro` would ship results of the old code.
"""

from __future__ import annotations

import shlex

import pytest
import yaml

from pipeline.codebase import PACKAGES, ROOT, code_closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(cmd: str) -> str:
    words = shlex.split(cmd)
    return words[words.index("-m") + 1]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_code_the_stage_runs(stage):
    spec = STAGES[stage]
    code = {d for d in spec["deps"] if d.split("/")[0] in PACKAGES}
    closure = set(code_closure(stage_module(spec["cmd"])))
    assert code == closure, f"dvc.yaml stage {stage}: missing {sorted(closure - code)}, not run by it {sorted(code - closure)}"


def test_closure_follows_imports_inside_functions_and_through_other_modules(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "stages" / "s.py").write_text("from pipeline import a\n")
    (tmp_path / "pipeline" / "a.py").write_text("def f():\n    from pipeline.b import g\n")
    (tmp_path / "pipeline" / "b.py").write_text("from pathlib import Path\nT = Path(__file__).with_name(\"t.txt\")\n")
    (tmp_path / "pipeline" / "c.py").write_text("")  # imported by nobody
    assert code_closure("stages.s", tmp_path) == ["pipeline/a.py", "pipeline/b.py", "pipeline/t.txt", "stages/s.py"]

    closure = code_closure("stages.fetch")
    assert "pipeline/functiongemma.py" in closure and "pipeline/chat_template.jinja" in closure
    train = set(code_closure("stages.train"))
    assert {"stages/train.py", "pipeline/params.py", "pipeline/common.py", "pipeline/functiongemma.py"} <= train
    assert "stages/eval.py" not in train
