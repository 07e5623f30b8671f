"""`make report` (commands/report.py) and the pull-request workflow that posts it.

A temporary git + DVC project with a one-stage pipeline whose metric follows
`train.lr` stands in for the real pipeline (seconds, no model): two `dvc exp
run`s, then the real Makefile target compares them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from commands.report import render
from tests.helpers import DVC, ROOT, make_project, run, set_params

WORKFLOW = ROOT / ".github" / "workflows" / "pr.yml"

# A stage that turns train.lr into a metric, so a param change moves a metric.
SCORE_PY = """\
import json, os
from ruamel.yaml import YAML
train = YAML(typ="safe").load(open("params.yaml"))["train"]
os.makedirs("metrics", exist_ok=True)
json.dump({"loss": round(1 / (1 + float(train["lr"]) * 1e4), 4), "max_steps": train["max_steps"]},
          open("metrics/score.json", "w"))
"""
DVC_YAML = """\
stages:
  score:
    cmd: python score.py
    deps: [score.py]
    params: [train.lr, train.max_steps]
    metrics:
      - metrics/score.json:
          cache: false
"""


def link_venv(repo: Path) -> None:
    """`repo/.venv` as an alias of the running venv, marked installed: `make` targets run without reinstalling."""
    venv = repo / ".venv"
    venv.mkdir()
    source = Path(sys.prefix)
    for name in ("bin", "lib", "pyvenv.cfg"):
        if (source / name).exists():
            (venv / name).symlink_to(source / name)
    (venv / ".installed").touch()  # newer than pyproject.toml: `make setup` is satisfied


def make(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=repo, capture_output=True, text=True,
                            timeout=300, env=env)
    if check:
        assert result.returncode == 0, f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def table_row(markdown: str, *first_cells: str) -> list[str]:
    """The cells of the one markdown table row that starts with `first_cells`."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    found = [r for r in rows if r[:len(first_cells)] == list(first_cells)]
    assert len(found) == 1, f"expected one row starting {first_cells} in:\n{markdown}"
    return found[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Branch `main` (train.lr 3e-5, never run), then experiments exp-1 (lr 1e-4) and exp-2 (lr 2e-5, left in the workspace)."""
    repo = make_project(tmp_path_factory.mktemp("report"), {"train.lr": 3e-5})
    (repo / "score.py").write_text(SCORE_PY)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "one-stage pipeline"], repo)
    run(["git", "branch", "-M", "main"], repo)
    link_venv(repo)
    run(DVC + ["exp", "run", "-n", "exp-1", "-S", "train.lr=1e-4"], repo)
    run(DVC + ["exp", "run", "-n", "exp-2", "-S", "train.lr=2e-5"], repo)
    return repo


def test_report_compares_two_experiments(project):
    out = make(project, "report", "A=exp-1", "B=exp-2").stdout

    assert "`exp-1` → `exp-2`" in out
    assert table_row(out, "Path", "Param") == ["Path", "Param", "exp-1", "exp-2"]
    assert table_row(out, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "0.0001", "2e-05"]
    assert table_row(out, "Path", "Metric") == ["Path", "Metric", "exp-1", "exp-2", "Change"]
    assert table_row(out, "metrics/score.json", "loss") == ["metrics/score.json", "loss", "0.5", "0.8333", "0.3333"]
    assert "max_steps" not in out  # unchanged params and metrics stay out of the review


def test_report_defaults_to_main_vs_workspace(project):
    out = make(project, "report").stdout

    assert "`main` → `workspace`" in out
    assert table_row(out, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "3e-05", "2e-05"]
    # main never ran the pipeline: DVC shows its side as "-"
    assert table_row(out, "metrics/score.json", "loss")[2:4] == ["-", "0.8333"]


def test_report_unknown_revision_is_one_sentence(project):
    result = make(project, "report", "A=exp-1", "B=no-such-exp", check=False)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'no-such-exp' does not exist" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_render_says_when_nothing_changed():
    empty = "| Path   | Metric   | a   | b   | Change   |\n|--------|----------|-----|-----|----------|\n\n"
    out = render("a", "b", empty, "")
    assert "No metric changed." in out and "No param changed." in out and "|" not in out


# ---------------------------------------------------------------- the workflow


def workflow_steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["test-and-report"]["steps"]


def step(name_part: str) -> dict:
    (found,) = [s for s in workflow_steps() if name_part in s.get("name", "")]
    return found


def test_workflow_runs_the_tests_on_pull_requests():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    runs = [s.get("run", "").strip() for s in workflow_steps()]
    assert runs.index("make setup") < runs.index("make test")
    assert workflow["permissions"]["pull-requests"] == "write"
    python = [s for s in workflow_steps() if s.get("uses", "").startswith("actions/setup-python")]
    assert python and python[0]["with"]["cache"] == "pip"


def run_step(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    # the shell GitHub runs a `run:` step with on Linux
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1", **env))


def test_workflow_report_and_pull_steps_in_a_pr_checkout(project, tmp_path):
    """A clone (origin/main = the base branch) with one PR commit: the steps' own scripts, as the runner runs them."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["git", "config", "user.email", "ci@example.com"], clone)
    run(["git", "config", "user.name", "ci"], clone)
    link_venv(clone)
    set_params(clone / "params.yaml", {"train.lr": 1e-4})
    run(DVC + ["repro"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-q", "-m", "raise the learning rate"], clone)

    # no DVC remote: the pull step says so and succeeds
    pull = step("dvc pull")["run"]
    result = run_step(pull, clone)
    assert result.returncode == 0, result.stderr
    assert "no DVC remote configured" in result.stdout

    # a local-folder remote: the step pulls (nothing is missing here)
    run(DVC + ["remote", "add", "--local", "-d", "store", str(tmp_path / "store")], clone)
    result = run_step(pull, clone)
    assert result.returncode == 0, result.stderr
    assert "no DVC remote configured" not in result.stdout and "::warning::" not in result.stdout, result.stdout

    summary = tmp_path / "summary.md"
    result = run_step(step("diff against the base branch")["run"], clone, BASE_REF="main", GITHUB_STEP_SUMMARY=str(summary))
    assert result.returncode == 0, result.stderr
    report = (clone / "report.md").read_text()
    assert "`origin/main` → `HEAD`" in report
    assert table_row(report, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "3e-05", "0.0001"]
    assert table_row(report, "metrics/score.json", "loss")[2:4] == ["-", "0.5"]
    assert summary.read_text() == report
