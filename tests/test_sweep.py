"""make sweep: a grid of experiments queued and run by DVC's own queue, then one table (tiny model, offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from commands import sweep
from pipeline.common import UserError
from tests.helpers import DVC, OFFLINE_TINY, make_project, run

GRID = """
base:
  format.validation_rows: 20
  eval.split: validation
  eval.compare_base: false
  eval.limit: 4
  eval.max_new_tokens: 4
  train.max_steps: 2
  train.per_device_batch_size: 2
  train.gradient_accumulation_steps: 1
  train.eval_rows: 2
experiments:
  fast: {train.lr: 0.001}
  adapters: {train.lr: 0.0001, train.lora.enabled: true, train.lora.target_modules: [q_proj, v_proj]}
"""


def test_grid_file_is_read_as_dash_s_text(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    base, experiments = sweep.read_grid(tmp_path / "grid.yaml")
    assert base["eval.split"] == "validation" and base["eval.compare_base"] == "false"
    assert experiments["adapters"] == {"train.lr": "0.0001", "train.lora.enabled": "true",
                                       "train.lora.target_modules": "[q_proj, v_proj]"}
    (tmp_path / "bad.yaml").write_text("base: {}\n")
    with pytest.raises(UserError, match="needs `experiments:`"):
        sweep.read_grid(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="not found"):
        sweep.read_grid(tmp_path / "missing.yaml")


def test_the_demo_grid_validates():
    from tests.helpers import ROOT
    from commands.experiments import check_overrides

    base, experiments = sweep.read_grid(ROOT / "bench" / "sweep_demo.yaml")
    assert base["eval.split"] == "validation" and int(base["format.validation_rows"]) > 0  # never the held-out rows
    for overrides in experiments.values():
        check_overrides(ROOT, {**base, **overrides})


@pytest.mark.integration  # dvc
def test_a_bad_key_stops_the_sweep_before_anything_is_queued(tmp_path):
    repo = make_project(tmp_path, OFFLINE_TINY)
    (repo / "grid.yaml").write_text(GRID.replace("train.lr: 0.001", "train.learning_rate: 0.001"))
    result = run([sys.executable, "-m", "commands.sweep", "--grid", "grid.yaml"], repo, check=False)
    assert "params.yaml has no train.learning_rate" in result
    assert "Queued" not in run(DVC + ["queue", "status"], repo)


@pytest.mark.integration  # dvc
def test_sweep_runs_the_grid_in_dvcs_queue_and_tabulates_validation_exact_match(tmp_path):
    repo = make_project(tmp_path, OFFLINE_TINY)
    (repo / "grid.yaml").write_text(GRID)
    out = run([sys.executable, "-m", "commands.sweep", "--grid", "grid.yaml"], repo, timeout=1200)
    assert "dvc queue start -j 1" in out
    table = [line for line in out.splitlines() if line.startswith("| sweep-")]
    assert sorted(line.split(" | ")[0] for line in table) == ["| sweep-adapters", "| sweep-fast"]
    assert all("% (n = 4, 95% interval" in line for line in table)  # the 4 validation rows eval judged
    finished = [line for line in out.splitlines() if line.startswith("sweep-")]  # each one's figure as it finished
    assert sorted(line.split(":")[0] for line in finished) == ["sweep-adapters", "sweep-fast"]
    assert all("validation exact match" in line and "% (n = 4, 95% interval" in line for line in finished)
    shown = json.dumps(json.loads(run(DVC + ["exp", "show", "--json"], repo, stdout_only=True)))
    assert "sweep-fast" in shown and "sweep-adapters" in shown
    again = run([sys.executable, "-m", "commands.sweep", "--grid", "grid.yaml", "--collect"], repo)
    assert [line for line in again.splitlines() if line.startswith("| sweep-")] == table


def test_a_queue_left_without_a_worker_gets_one(monkeypatch):
    """Tasks still queued and no worker (DVC's worker can stop early): the sweep starts one, then waits on."""
    statuses = iter([
        "Task  Name  Created  Status\nab1  sweep-a  02:37 AM  Success\nab2  sweep-b  02:37 AM  Queued\n\n"
        "Worker status: 0 active, 0 idle\n",
        "Task  Name  Created  Status\nab1  sweep-a  02:37 AM  Success\nab2  sweep-b  02:37 AM  Running\n\n"
        "Worker status: 1 active, 0 idle\n",
        "Task  Name  Created  Status\nab1  sweep-a  02:37 AM  Success\nab2  sweep-b  02:37 AM  Success\n\n"
        "Worker status: 0 active, 0 idle\n",
    ])
    started = []
    monkeypatch.setattr(sweep, "queue_status", lambda root: next(statuses))
    monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, **kw: started.append(cmd[-4:]))
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)
    sweep.wait_for_queue(Path("."), ["a", "b"])
    assert started == [["queue", "start", "-j", "1"]]


def test_each_experiment_is_reported_as_soon_as_it_finishes(monkeypatch, caplog):
    """on_finished runs once per experiment, at the first poll where it is neither queued nor running (names
    matched whole: sweep-lr finishing is not sweep-lr-2e-3); the waiting line only when the queue changes."""
    head, workers = "Task  Name  Created  Status\n", "\nWorker status: 1 active, 0 idle\n"
    statuses = iter([
        head + "ab1  sweep-lr  02:37 AM  Running\nab2  sweep-lr-2e-3  02:37 AM  Queued\n" + workers,
        head + "ab1  sweep-lr  02:37 AM  Running\nab2  sweep-lr-2e-3  02:37 AM  Queued\n" + workers,
        head + "ab1  sweep-lr  02:37 AM  Success\nab2  sweep-lr-2e-3  02:37 AM  Running\n" + workers,
        head + "ab1  sweep-lr  02:37 AM  Success\nab2  sweep-lr-2e-3  02:37 AM  Failed\n" + workers,
    ])
    events = []
    monkeypatch.setattr(sweep, "queue_status", lambda root: (events.append("poll"), next(statuses))[1])
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)
    caplog.set_level("INFO", logger="sweep")
    sweep.wait_for_queue(Path("."), ["lr", "lr-2e-3"], on_finished=events.append)
    assert events == ["poll", "poll", "poll", "lr", "poll", "lr-2e-3"]
    waiting = [r.getMessage() for r in caplog.records if "still queued" in r.getMessage()]
    assert len(waiting) == 2  # the second poll changed nothing: no line
    assert waiting[0].startswith("2 of 2 experiments") and "`dvc queue logs -f sweep-lr`" in waiting[0]
    assert "failed experiments (see `dvc queue logs NAME`): sweep-lr-2e-3" in caplog.text


def test_a_finished_experiment_is_one_line_with_its_figure():
    row = {"name": "fast", "failed": False, "exact": 0.75, "n": 60, "train_minutes": 8.46, "steps": 135}
    assert sweep.finished_line(row) == ("sweep-fast: validation exact match 75.0% (n = 60, 95% interval 62.8-84.2%), "
                                        "8.5 train minutes")
    assert sweep.finished_line({"name": "fast", "failed": True}) == (
        "sweep-fast: no result (failed: see `dvc queue logs sweep-fast`)")
