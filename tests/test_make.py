"""The Makefile run as a user runs it: from the repository root of a copy of the project, in a shell whose
PATH has no virtual environment on it (tiny model, offline). tests/test_readme.py runs the README's
commands with these helpers.

`.venv` in the copy is a link to this test run's environment, older than pyproject.toml is made to look,
so `make` finds it set up and installs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.examples import example_id
from tests.helpers import OFFLINE_TINY, PROJECT_FILES, ROOT, make_project

VENV = Path(sys.executable).parent.parent
QUICK_PIPELINE = {**OFFLINE_TINY, "train.max_steps": 2, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
                  "train.eval_rows": 2, "train.save_strategy": "steps", "train.save_steps": 1000, "eval.limit": 3,
                  "eval.max_new_tokens": 4, "eval.base_limit": 2, "convert.limit": 2}


def plain_shell_env() -> dict[str, str]:
    """os.environ without the virtual environment: not on PATH, not activated."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return dict(env, PATH=path, DVC_NO_ANALYTICS="1")


def user_checkout(tmp_path: Path, params: dict) -> Path:
    repo = make_project(tmp_path, params, files=[*PROJECT_FILES, "Makefile", "README.md", "bench"])
    (repo / ".venv").symlink_to(VENV, target_is_directory=True)
    os.utime(repo / "pyproject.toml", (0, 0))  # older than .venv/.installed: make sees the environment set up
    return repo


def shell(command: str, repo: Path, timeout: int = 900) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=repo, capture_output=True, text=True, timeout=timeout,
                            env=plain_shell_env())
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.integration
def test_the_shell_really_has_no_environment(tmp_path):
    repo = user_checkout(tmp_path, OFFLINE_TINY)
    found = subprocess.run(["bash", "-c", "command -v dvc || true; python3 -c 'import ruamel' 2>&1 || true"], cwd=repo,
                           capture_output=True, text=True, env=plain_shell_env()).stdout
    assert str(VENV) not in found  # neither the project's dvc nor its python is reachable without make or activate


@pytest.mark.slow  # two minutes of tiny benchmarks; `make test-slow`
@pytest.mark.skipif(not (VENV / ".installed").exists(), reason="needs an environment made by `make setup`")
def test_each_cpu_bench_target_runs_from_the_repository_root(tmp_path, tiny_base, formatted_sample):
    """The benchmarks' child processes run in temporary folders: the paths they get from dvc.yaml must
    still point at this checkout's models/ and data/."""
    repo = user_checkout(tmp_path, OFFLINE_TINY)
    shutil.copytree(tiny_base, repo / "models/base")
    shutil.copytree(tiny_base, repo / "models/finetuned")
    shutil.copytree(formatted_sample, repo / "data/formatted")
    rows = [json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()]
    (repo / "data/eval").mkdir(parents=True)
    (repo / "data/eval/predictions.jsonl").write_text("".join(
        json.dumps({"id": example_id(r), "model": "finetuned", "raw": "I cannot.<end_of_turn>"}) + "\n" for r in rows[:2]))

    out = shell('make bench-train BENCH_ARGS="--batch-size 1 --grad-accum 1 --rounds 1"', repo)
    assert "| ours |" in out and "share of the matmul rate" in out and "matmul rate measured now: fp32" in out
    out = shell('make bench-eval BENCH_ARGS="--examples 2 --max-new-tokens 4 --variants prefill8"', repo)
    assert "notebook way: pipeline('text-generation')" in out and "| prefill8: 8 prompts prefilled together |" in out
    out = shell('make bench-accuracy SEEDS=1 BENCH_ARGS="--max-steps 2 --eval-rows 2"', repo, timeout=1200)
    assert "| exact_match, mean of 1 |" in out and "notebook, seed 42:" in out
    out = shell('make learning-curve STEPS=2 CHECKPOINTS=1 BENCH_ARGS="--split eval --rows 2"', repo)
    assert "| step | rows trained on | epochs | train minutes | eval exact match | loss |" in out and "| 1 | 2 |" in out
    out = shell('make bench-quant BENCH_ARGS="--recipes none --limit 2"', repo)
    assert "| none |" in out and "PyTorch (the eval stage's answers)" in out
