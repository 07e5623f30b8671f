"""format stage: valid rows become examples, invalid ones are reported by line."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages import format as format_stage
from pipeline.common import UserError, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
FIXTURES = ROOT.parent / "shared" / "fixtures"
GOLDEN_ROWS = FIXTURES / "functiongemma_golden_rows.jsonl"


def golden_rows() -> list[dict]:
    return [json.loads(line) for line in GOLDEN_ROWS.read_text().splitlines()]


def with_call(row: dict, name: str, arguments: dict) -> dict:
    row = copy.deepcopy(row)
    row["messages"][-1]["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
    return row


def test_valid_golden_rows_have_no_errors():
    assert [format_stage.validate_row(r) for r in golden_rows()] == [[], [], []]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: with_call(r, "launch_rocket", {}), "undeclared tool 'launch_rocket'"),
        (lambda r: with_call(r, "show_map", {"query": "x", "zoom": "3"}), "argument 'zoom' is not declared"),
        (lambda r: with_call(r, "send_email", {"to": "a@b.c"}), "required argument 'subject' is missing"),
        (lambda r: {k: v for k, v in r.items() if k != "tools"}, "missing 'tools' list"),
        (lambda r: {k: v for k, v in r.items() if k != "messages"}, "missing 'messages' list"),
        (lambda r: dict(r, metadata="test"), "metadata must be 'train' or 'eval'"),
        (lambda r: dict(r, messages=r["messages"][:-1]), "last message must be the assistant"),
    ],
)
def test_invalid_rows_are_explained(mutate, reason):
    errors = format_stage.validate_row(mutate(golden_rows()[0]))
    assert any(reason in e for e in errors), errors


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_errors_name_line_numbers_and_stop(tmp_path, tiny_base):
    rows = golden_rows()
    raw = write_rows(tmp_path / "rows.jsonl", [rows[0], "{broken json", with_call(rows[1], "nope", {}), rows[2]])
    with pytest.raises(UserError) as err:
        format_stage.main(["--params", str(ROOT / "params.yaml"), "--raw", str(raw), "--tokenizer", str(tiny_base),
                           "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")])
    message = str(err.value)
    assert "2 invalid row(s)" in message and "line 2: invalid JSON" in message and "line 3: calls undeclared tool" in message
    assert "format.on_invalid: skip" in message
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_skip_drops_and_counts(tmp_path, tiny_base):
    rows = golden_rows()
    raw = write_rows(tmp_path / "rows.jsonl", [rows[0], "[1, 2]", rows[1], rows[2]])
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("on_invalid: error ", "on_invalid: skip  "))
    format_stage.main(["--params", str(params), "--raw", str(raw), "--tokenizer", str(tiny_base),
                       "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["rows_rejected"] == 1 and metrics["train_rows"] == 2 and metrics["eval_rows"] == 1
    rejected = [r for _, r, _ in read_jsonl(tmp_path / "out" / "rejected.jsonl")]
    assert rejected == [{"line": 2, "reasons": ["expected a JSON object, got list"]}]
    train = [r for _, r, _ in read_jsonl(tmp_path / "out" / "train.jsonl")]
    assert [ex["line"] for ex in train] == [1, 3]
    assert train[1]["function_names"] == ["create_calendar_event", "send_email"]


def test_formatted_sample_matches_the_renderer_and_counts(formatted_sample):
    from pipeline import functiongemma as fg

    raw = [r for _, r, _ in read_jsonl(SAMPLE)]
    train = [r for _, r, _ in read_jsonl(formatted_sample / "train.jsonl")]
    evals = [r for _, r, _ in read_jsonl(formatted_sample / "eval.jsonl")]
    assert len(train) == sum(r["metadata"] == "train" for r in raw) >= 400
    assert len(evals) == sum(r["metadata"] == "eval" for r in raw) >= 100
    for ex in train[:50] + evals[:50]:
        row = raw[ex["line"] - 1]
        assert {"prompt": ex["prompt"], "completion": ex["completion"]} == fg.render_row(row)
        assert ex["prompt"].startswith("<bos><start_of_turn>developer\n") and ex["prompt"].endswith("<start_of_turn>model\n")
        assert ex["completion"].endswith("<start_function_response>")
        assert ex["user"] and ex["user"] in ex["prompt"]
    metrics = json.loads((formatted_sample / "format.json").read_text())
    assert metrics["train_rows"] == len(train) and metrics["rows_rejected"] == 0
    assert 500 < metrics["train_tokens_median"] < 700  # seven tools in every prompt


def test_tokenized_example_has_exactly_one_bos(formatted_sample, tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    ex = next(r for _, r, _ in read_jsonl(formatted_sample / "train.jsonl"))
    ids = tok(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"]
    assert ids[0] == 2 and ids.count(2) == 1
    assert ids[-2:] == [49, 50]  # <end_function_call><start_function_response>


def test_preview_needs_no_model_and_prints_the_exact_text():
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(GOLDEN_ROWS)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    expected = json.loads((FIXTURES / "functiongemma_golden_expected.json").read_text())
    assert [{"prompt": p["prompt"], "completion": p["completion"]} for p in printed] == expected
    assert "transformers" not in result.stderr


def test_preview_reports_bad_rows(tmp_path):
    raw = write_rows(tmp_path / "rows.jsonl", [golden_rows()[0], "nope"])
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(raw)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 1
    assert "line 2: invalid JSON" in result.stderr
