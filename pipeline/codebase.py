"""The project's own code as files: which modules a stage runs (its import closure).

    from pipeline.codebase import code_closure
    code_closure("stages.train")    # ['pipeline/common.py', ..., 'stages/train.py'] (repository-relative)

A module's code is the module plus every project module it imports, directly or through other
project modules, at the top or inside a function (both run), and the data files those modules
open beside themselves (through `Path(__file__).with_name` with a literal name). The train stage hashes these files
into its run fingerprint (a code change never resumes an old run); tests/test_dvc_yaml.py checks
that dvc.yaml lists exactly these files as each stage's code deps.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "pipeline", "commands")  # the project's own top-level packages


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of a dotted project module (None for a package whose __init__ holds nothing)."""
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    init = path / "__init__.py"
    if init.is_file() and init.read_text(encoding="utf-8").strip():
        return init
    return None


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Project modules one file imports (absolute imports; `from pkg import mod` resolves to pkg.mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES and module_file(n, root) is not None)
    return found


def code_closure(module: str, root: Path = ROOT) -> list[str]:
    """Repository-relative paths (sorted) of a module, every project module it reaches, and their data files."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path, root))
    data = {p.with_name(name) for p in seen
            for name in re.findall(r'with_name\("([^"]+)"\)', p.read_text(encoding="utf-8"))}
    return sorted(str(p.relative_to(root)) for p in seen | data)
