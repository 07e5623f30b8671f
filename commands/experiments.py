"""DVC experiments from Python: what the demo and the sweep share (running `dvc`, finding an
experiment's commit, reading its files, validating `-S` overrides before anything runs).

    from commands.experiments import dvc, check_overrides, experiment_rev, read_at
    check_overrides(root, {"train.lr": "0.001"})        # ParamsError naming the key, before any work
    rev = experiment_rev(root, "demo-1")                 # the experiment's git commit
    read_at(root, rev, "metrics/eval.json")              # {} when the file is not in that commit
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.common import UserError
from pipeline.params import PARAMS_FILE, SECTIONS, load_params


def dvc(*args: str) -> list[str]:
    """This interpreter's DVC (the project's environment, whatever PATH says)."""
    return [sys.executable, "-m", "dvc", *args]


def environment() -> dict[str, str]:
    """The environment DVC runs the stages in: this interpreter's folder first on PATH, since dvc.yaml's
    commands are `python -m stages...`."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                DVC_NO_ANALYTICS="1")


def check_repository(root: Path) -> None:
    """`dvc exp run` needs a git repository with a commit and an initialised DVC project."""
    if not (root / ".dvc").is_dir():
        raise UserError(f"{root} is not a DVC project: run this from the repository root")
    result = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError("DVC experiments need a git repository with at least one commit: "
                        "clone the project (or `git init && git add -A && git commit -m start`) and run again")


def set_args(overrides: dict[str, str]) -> list[str]:
    """`-S key=value` for each override (values as written: DVC parses them as YAML, as `-S` on the command line)."""
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={value}")]


def check_overrides(root: Path, overrides: dict[str, str]) -> None:
    """Apply the overrides to a copy of params.yaml as `dvc exp run -S` would and validate every section:
    a wrong key or value stops here, naming it, before any experiment is queued or run."""
    from dvc.utils.serialize import modify_yaml
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / PARAMS_FILE
        shutil.copy(root / PARAMS_FILE, params)
        with modify_yaml(params) as data:
            for key, text in overrides.items():
                node, *parts = data, *key.split(".")
                for part in parts[:-1]:
                    if not isinstance(node, dict) or part not in node:
                        raise UserError(f"-S {key}: params.yaml has no {key}")
                    node = node[part]
                if not isinstance(node, dict) or parts[-1] not in node:
                    raise UserError(f"-S {key}: params.yaml has no {key}")
                node[parts[-1]] = yaml.load(text)
        load_params(*SECTIONS, path=params)


def experiment_rev(root: Path, name: str) -> str:
    """The git commit of a named experiment (refs/exps/.../<name>)."""
    refs = subprocess.run(["git", "show-ref"], cwd=root, capture_output=True, text=True, check=True).stdout
    for line in refs.splitlines():
        sha, ref = line.split(maxsplit=1)
        if ref.startswith("refs/exps/") and ref.rsplit("/", 1)[-1] == name:
            return sha
    raise UserError(f"experiment {name!r} not found: see `dvc exp show`")


def read_at(root: Path, rev: str, path: str) -> dict:
    """A JSON file of a commit ({} when that commit has no such file)."""
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def stream(cmd: list[str], root: Path) -> Iterator[str]:
    """Run a command, yielding its output lines as they come; a UserError when it fails."""
    with subprocess.Popen(cmd, cwd=root, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        yield from proc.stdout
        returncode = proc.wait()
    if returncode != 0:
        raise UserError(f"`{' '.join(['dvc', *cmd[3:]])}` failed (exit {returncode}); the log above names the stage and the reason")
