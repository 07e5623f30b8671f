"""Plain helpers the test modules share (not fixtures, not tests): running commands, editing
params.yaml as `dvc exp run -S` does, and building a throwaway git + DVC copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
# what a pipeline run needs from the repository (not .venv, not outputs)
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "pipeline", "commands", "data/sample", "pyproject.toml", ".gitignore"]
OFFLINE_TINY = {"data.source": "sample", "model.source": "tiny"}


def env(**extra: str) -> dict[str, str]:
    """The environment the pipeline's commands run in: this interpreter's venv first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1", **extra)


def run(cmd: list[str], cwd: Path, timeout: int = 600, stdout_only: bool = False, check: bool = True,
        **extra_env: str) -> str:
    """Run a command; unless check is false, fail the test with its output when it fails. Returns stdout (+ stderr)."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env(**extra_env))
    if check:
        assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def set_params(params: Path, updates: dict[str, object]) -> None:
    """Edit params.yaml the way `dvc exp run -S` does (comments kept)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(params) as data:
        for key, value in updates.items():
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value


def init_repo(repo: Path) -> None:
    """git init + dvc init + one commit of everything in `repo` (what `dvc exp run` needs)."""
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "ci@example.com"], repo)
    run(["git", "config", "user.name", "ci"], repo)
    run(DVC + ["init", "-q"], repo)
    run(DVC + ["config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "project"], repo)


def make_project(tmp_path: Path, params: dict[str, object], files: list[str] = PROJECT_FILES) -> Path:
    """Copy the project into a new git + DVC repo with one commit, params.yaml edited."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in files:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, repo / name)
    set_params(repo / "params.yaml", params)
    init_repo(repo)
    return repo


def train_params(**overrides):
    """params.yaml's train section with some keys changed (`lora_r=8` changes train.lora.r), validated."""
    from pipeline.params import parse_section, read_yaml

    values = read_yaml(ROOT / "params.yaml")["train"]
    for key, value in overrides.items():
        if key.startswith("lora_"):
            values["lora"] = dict(values["lora"], **{key[5:]: value})
        else:
            values[key] = value
    return parse_section("train", values)


def quick_config(params, tmp_path: Path):
    """TRL's config for a short in-process run: fp32, plain AdamW, no eval, on the CPU."""
    from stages import train

    return train.sft_config(params, tmp_path / "ck", "fp32", "adamw_torch", has_eval=False, use_cpu=True, max_length=997)
