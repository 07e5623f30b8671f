"""The DVC pipeline itself: `dvc repro fetch format` in a fresh git repo, offline params."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import DVC, OFFLINE_TINY, ROOT, env, make_project, run, set_params


@pytest.mark.integration
def test_repro_fetch_format_then_nothing_changes(tmp_path):
    repo = make_project(tmp_path, OFFLINE_TINY)
    run(DVC + ["repro", "format"], repo)

    assert (repo / "data/raw/dataset.jsonl").read_bytes() == (ROOT / "data/sample/mobile_actions_sample.jsonl").read_bytes()
    assert {p.name for p in (repo / "data/formatted").iterdir()} == {"train.jsonl", "eval.jsonl", "validation.jsonl", "rejected.jsonl",
                                                                     "hygiene.jsonl"}
    assert (repo / "models/base/model.safetensors").exists()
    metrics = json.loads((repo / "metrics/format.json").read_text())
    assert metrics["train_rows"] >= 400 and metrics["eval_rows"] >= 100 and metrics["rows_rejected"] == 0
    lock = (repo / "dvc.lock").read_text()
    assert "fetch" in lock and "format" in lock

    out = run(DVC + ["repro", "format"], repo)
    assert "didn't change, skipping" in out and "Running stage" not in out
    status = run(DVC + ["status", "format"], repo)  # format and what it depends on
    assert "up to date" in status
    shown = run(DVC + ["metrics", "show"], repo)
    assert "train_rows" in shown

    # a format param change re-runs format only
    set_params(repo / "params.yaml", {"format.max_length": 600})
    out = run(DVC + ["repro", "format"], repo)
    assert "Running stage 'format'" in out and "Running stage 'fetch'" not in out
    metrics = json.loads((repo / "metrics/format.json").read_text())
    assert metrics["train_rows_over_max_length"] > 0
    # max_length is a param (dvc params diff shows it), token lengths are the record's, not metrics
    shown = run(DVC + ["metrics", "show", "--md"], repo, stdout_only=True)
    columns = {c.strip() for c in shown.splitlines()[0].strip("|").split("|")}
    assert "train_rows_over_max_length" in columns and "max_length" not in columns and "eval_fraction" not in columns
    assert not [c for c in columns if "tokens" in c or "_calling_" in c or "_calls_" in c]
    assert json.loads((repo / "metrics/record/format.json").read_text())["train_tokens_max"] > 600
    assert {r["function"] for r in json.loads((repo / "metrics/format_per_function.json").read_text())} >= {"show_map"}


@pytest.mark.integration
def test_repro_format_on_a_folder_of_mixed_shapes_and_file_types(tmp_path, mixed_folder):
    """Your own data: Mobile Actions, OpenAI-style and xLAM rows across JSONL, JSON and Parquet files."""
    repo = make_project(tmp_path, {"data.source": "local", "data.path": "mydata", "model.source": "tiny",
                                   "format.on_invalid": "skip"})
    shutil.copytree(mixed_folder["folder"], repo / "mydata")
    out = run(DVC + ["repro", "format"], repo)
    metrics = json.loads((repo / "metrics/format.json").read_text())
    assert (metrics["rows_shape_mobile_actions"], metrics["rows_shape_openai"], metrics["rows_shape_xlam"]) == (8, 7, 7)
    assert (metrics["duplicate_rows"], metrics["leaked_requests"], metrics["type_mismatches"], metrics["rows_rejected"]) == (1, 1, 2, 1)
    assert metrics["rows_split_by_rule"] == 17 and metrics["eval_rows"] >= 3
    assert "hygiene: 1 exact duplicate row(s)" in out and "mydata/xlam.parquet row index 2: calls undeclared tool" in out
    rejected = [json.loads(line) for line in (repo / "data/formatted/rejected.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejected] == ["mydata/xlam.parquet row index 2"]  # the user's own file, as data.path names it
    shown = run(DVC + ["metrics", "show"], repo)
    assert "duplicate_rows" in shown and "leaked_requests" in shown

    # data.schema is read by format only: changing it re-runs format, not fetch
    set_params(repo / "params.yaml", {"data.schema": "mobile_actions"})
    out = run(DVC + ["repro", "format"], repo)
    assert "Running stage 'format'" in out and "Running stage 'fetch'" not in out
    metrics = json.loads((repo / "metrics/format.json").read_text())
    assert metrics["rows_shape_mobile_actions"] == 8 and metrics["rows_rejected"] == 23 - 8


@pytest.mark.parametrize("bad, key", [({"model.source": "huggingface"}, "model.source")])
@pytest.mark.integration
def test_bad_param_fails_the_stage_before_work(tmp_path, bad, key):
    repo = make_project(tmp_path, dict(OFFLINE_TINY, **bad))
    result = subprocess.run(DVC + ["repro", "format"], cwd=repo, capture_output=True, text=True, timeout=600, env=env())
    assert result.returncode != 0
    assert key in result.stdout + result.stderr
    assert not (repo / "data" / "raw").exists() and not (repo / "models" / "base").exists()
