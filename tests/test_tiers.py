"""The tier rule (tests/tiers.py): an unmarked test that runs pipeline work fails, naming the marker to add."""

from __future__ import annotations

import sys

import pytest

from tests.tiers import pipeline_work

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, what", [
    (["dvc", "repro"], "dvc"),
    ([sys.executable, "-m", "dvc", "exp", "run"], "python -m dvc"),
    (["make", "--no-print-directory", "repro"], "make"),
    ("/usr/bin/make -n push", "make"),
    ([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"], "python -m accelerate.commands.launch"),
    (["/x/.venv/bin/accelerate", "launch"], "accelerate"),
    ([sys.executable, "-m", "stages.train", "--params", "p.yaml"], "python -m stages.train"),
    ([sys.executable, "bench/recipe_accuracy.py", "--child", "spec.json"], "python bench/recipe_accuracy.py"),
    (["bash", "-c", "source .venv/bin/activate && dvc exp run -S train.lr=2e-5"], "dvc"),
    (["bash", "-c", "make learning-curve STEPS=2"], "make"),
    (["bash", "-c", "cd repo; python -m stages.train --params p.yaml"], "python -m stages.train"),  # any command of the line
])
def test_pipeline_work_is_recognised(args, what):
    assert pipeline_work(args) == what


@pytest.mark.parametrize("args", [
    ["git", "init"],
    [sys.executable, "-c", "print(1)"],
    [sys.executable, "-m", "stages.format", "--preview", "rows.jsonl"],  # renders rows, loads no model
    [sys.executable, "data/sample/generate.py", "--out", "x.jsonl"],
    ["bash", "-c", "command -v dvc || true"],
    [],
])
def test_other_commands_are_not_pipeline_work(args):
    assert pipeline_work(args) is None


CHILD_TESTS = '''
import subprocess, sys
import pytest


def test_make_unmarked():
    subprocess.run(["make", "--version"], capture_output=True)


def test_dvc_through_a_shell_unmarked():
    subprocess.run(["bash", "-c", "dvc version"], capture_output=True)


def test_training_unmarked():
    import transformers
    transformers.Trainer.train(None)


def test_a_plain_command_unmarked():
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0


@pytest.mark.integration
def test_make_marked():
    assert subprocess.run(["make", "--version"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_stage_marked_slow():
    assert subprocess.run([sys.executable, "-m", "stages.fetch", "--help"], capture_output=True).returncode == 0
'''


def test_an_unmarked_test_that_runs_pipeline_work_fails_with_the_marker_to_add(pytester, monkeypatch):
    """A new test calling make, dvc or a training without a marker is caught; marked, the same calls run."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('def pytest_configure(config):\n'
                          '    config.addinivalue_line("markers", "integration: x")\n'
                          '    config.addinivalue_line("markers", "slow: x")\n')
    pytester.makepyfile(test_new=CHILD_TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.tiers", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=3, failed=3)
    out = result.stdout.str()
    for name, what in [("test_make_unmarked", "runs make"), ("test_dvc_through_a_shell_unmarked", "runs dvc"),
                       ("test_training_unmarked", "runs a training (Trainer.train)")]:
        assert f"test_new.py::{name} {what} without a tier marker: add @pytest.mark.integration" in out, name
