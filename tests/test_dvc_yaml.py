"""dvc.yaml knows what each stage runs: its `deps` list every project file the stage's code is made of.

A stage module's code is the module plus every project module it imports, directly or through
other project modules, at the top or inside a function (both run), and the data files those
modules open beside themselves (`Path(__file__).with_name(...)`). If dvc.yaml missed one, a
change to it would not re-run the stage and `dvc repro` would ship results of the old code.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "pipeline", "commands")  # the project's own top-level packages
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (None for a package with nothing in its __init__)."""
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    init = path / "__init__.py"
    if init.is_file() and init.read_text().strip():
        return init
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules one file imports (absolute imports; `from pkg import mod` resolves to pkg.mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES and module_file(n) is not None)
    return found


def code_closure(module: str) -> set[str]:
    """Repository-relative paths of a module, every project module it reaches, and their data files."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    data = {p.with_name(name) for p in seen for name in re.findall(r'with_name\("([^"]+)"\)', p.read_text())}
    return {str(p.relative_to(ROOT)) for p in seen | data}


def stage_module(cmd: str) -> str:
    words = shlex.split(cmd)
    return words[words.index("-m") + 1]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_code_the_stage_runs(stage):
    spec = STAGES[stage]
    code = {d for d in spec["deps"] if d.split("/")[0] in PACKAGES}
    assert code == code_closure(stage_module(spec["cmd"])), (
        f"dvc.yaml stage {stage}: missing {sorted(code_closure(stage_module(spec['cmd'])) - code)}, "
        f"not run by the stage {sorted(code - code_closure(stage_module(spec['cmd'])))}")


def test_closure_follows_imports_inside_functions_and_through_other_modules():
    closure = code_closure("stages.fetch")
    assert "pipeline/functiongemma.py" in closure and "pipeline/chat_template.jinja" in closure
    train = code_closure("stages.train")
    assert {"stages/train.py", "pipeline/params.py", "pipeline/common.py", "pipeline/functiongemma.py"} <= train
    assert "stages/eval.py" not in train
