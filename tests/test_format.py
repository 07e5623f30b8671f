"""format stage: valid rows become examples, invalid ones are reported by line."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import format as format_stage
from pipeline import functiongemma as fg
from pipeline import rows as row_shapes
from pipeline.common import UserError, read_jsonl, run_main
from tests.helpers import json_values, replace_somewhere

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
SEARCH = {"type": "function", "function": {
    "name": "search_docs", "description": "Search internal documents.", "return": {"type": "string"},
    "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "query string"}},
                   "required": ["query"]}}}
OPENAI_SHAPE = {"metadata": "eval", "tools": [SEARCH], "messages": [
    {"role": "developer", "content": "You are a model that can do function calling with the following functions"},
    {"role": "user", "content": "What is the travel meal limit?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "search_docs",
                                                                           "arguments": {"query": "travel meal limit"}}}]}]}


def valid_rows() -> list[dict]:
    """Three valid rows that need nothing outside the repository: a one-call and a two-call row of the
    committed sample, and one in the OpenAI-style shape ("type": "function" wrappers, lower-case types, a
    `return` entry)."""
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    one = next(r for r in sample if len(r["messages"][-1]["tool_calls"]) == 1)
    two = next(r for r in sample if len(r["messages"][-1]["tool_calls"]) == 2)
    return [one, two, copy.deepcopy(OPENAI_SHAPE)]


def with_call(row: dict, name: str, arguments: dict) -> dict:
    row = copy.deepcopy(row)
    row["messages"][-1]["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
    return row


def test_valid_golden_rows_have_no_errors():
    assert [format_stage.validate_row(r) for r in valid_rows()] == [[], [], []]


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
    errors = format_stage.validate_row(mutate(valid_rows()[0]))
    assert any(reason in e for e in errors), errors


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_errors_name_line_numbers_and_stop(tmp_path, tiny_base):
    rows = valid_rows()
    raw = write_rows(tmp_path / "rows.jsonl", [rows[0], "{broken json", with_call(rows[1], "nope", {}), rows[2]])
    with pytest.raises(UserError) as err:
        format_stage.main(["--params", str(ROOT / "params.yaml"), "--raw", str(raw), "--tokenizer", str(tiny_base),
                           "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json"),
                           "--per-function", str(tmp_path / "f.json"), "--record", str(tmp_path / "r.json")])
    message = str(err.value)
    assert "2 invalid row(s)" in message and "line 2: invalid JSON" in message and "line 3: calls undeclared tool" in message
    assert "format.on_invalid: skip" in message
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_validation_rows_are_held_out_of_train_evenly_spaced(tmp_path, tiny_base, params_with):
    params = params_with({"format.validation_rows": 50})
    format_stage.main(["--params", str(params), "--raw", str(SAMPLE), "--tokenizer", str(tiny_base),
                       "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json"),
                       "--per-function", str(tmp_path / "f.json"), "--record", str(tmp_path / "r.json")])
    read = lambda split: [r for _, r, _ in read_jsonl(tmp_path / "out" / f"{split}.jsonl")]  # noqa: E731
    train, validation, held = read("train"), read("validation"), read("eval")
    raw = [r for _, r, _ in read_jsonl(SAMPLE)]
    assert len(validation) == 50 and len(train) + 50 == sum(r["metadata"] == "train" for r in raw)
    assert len(held) == sum(r["metadata"] == "eval" for r in raw)  # the eval split is untouched
    assert not {r["line"] for r in validation} & {r["line"] for r in train}
    lines = [r["line"] for r in validation]
    assert lines == sorted(lines) and lines[-1] - lines[0] > 500  # spread over the train rows, not a prefix
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["validation_rows"] == 50 and metrics["train_rows"] == len(train)
    # the per-function table and the length record count the validation split too
    functions = json.loads((tmp_path / "f.json").read_text())
    assert sum(r["validation_rows"] for r in functions) >= 50
    assert json.loads((tmp_path / "r.json").read_text())["validation_tokens_max"] > 0
    with pytest.raises(UserError, match="format.validation_rows 600 would leave no train rows"):
        format_stage.main(["--params", str(params_with({"format.validation_rows": 600}, "all.yaml")), "--raw", str(SAMPLE),
                           "--tokenizer", str(tiny_base), "--out-dir", str(tmp_path / "o2"), "--metrics", str(tmp_path / "m2.json"),
                           "--per-function", str(tmp_path / "f2.json"), "--record", str(tmp_path / "r2.json")])


def test_skip_drops_and_counts(tmp_path, tiny_base):
    rows = valid_rows()
    raw = write_rows(tmp_path / "rows.jsonl", [rows[0], "[1, 2]", rows[1], rows[2]])
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("on_invalid: error ", "on_invalid: skip  "))
    format_stage.main(["--params", str(params), "--raw", str(raw), "--tokenizer", str(tiny_base),
                       "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json"),
                           "--per-function", str(tmp_path / "f.json"), "--record", str(tmp_path / "r.json")])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["rows_rejected"] == 1 and metrics["train_rows"] == 2 and metrics["eval_rows"] == 1
    rejected = [r for _, r, _ in read_jsonl(tmp_path / "out" / "rejected.jsonl")]
    assert rejected == [{"line": 2, "where": f"{raw} line 2", "shape": None, "reasons": ["expected a JSON object, got list"]}]
    train = [r for _, r, _ in read_jsonl(tmp_path / "out" / "train.jsonl")]
    assert [ex["line"] for ex in train] == [1, 3]
    assert train[1]["function_names"] == [c["function"]["name"] for c in rows[1]["messages"][-1]["tool_calls"]]
    assert len(train[1]["function_names"]) == 2


def test_formatted_sample_matches_the_renderer_and_counts(formatted_sample):
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
    record = json.loads((formatted_sample / "record.json").read_text())
    assert 500 < record["train_tokens_median"] < 700  # seven tools in every prompt
    assert record["train_tokens_min"] <= record["train_tokens_p95"] <= record["train_tokens_max"] <= 997
    functions = json.loads((formatted_sample / "per_function.json").read_text())
    assert [r["function"] for r in functions] == sorted(r["function"] for r in functions) and len(functions) == 7
    assert sum(r["eval_rows"] for r in functions) >= len(evals)  # a multi-call row counts for each of its functions
    assert sum(r["train_calls"] for r in functions) == sum(len(ex["target_calls"]) for ex in train)


def test_tokenized_example_has_exactly_one_bos(formatted_sample, tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    ex = next(r for _, r, _ in read_jsonl(formatted_sample / "train.jsonl"))
    ids = tok(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"]
    assert ids[0] == 2 and ids.count(2) == 1
    assert ids[-2:] == [49, 50]  # <end_function_call><start_function_response>


def test_preview_needs_no_model_and_prints_the_exact_text(tmp_path):
    rows = valid_rows()
    path = write_rows(tmp_path / "rows.jsonl", rows)
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{"prompt": p["prompt"], "completion": p["completion"]} for p in printed] == [fg.render_row(r) for r in rows]
    assert "transformers" not in result.stderr


def test_preview_prints_what_the_real_chat_template_rendered(tmp_path, golden_rows, golden_expected):
    path = write_rows(tmp_path / "golden.jsonl", golden_rows)
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{"prompt": p["prompt"], "completion": p["completion"]} for p in printed] == golden_expected


def test_preview_reports_bad_rows(tmp_path):
    raw = write_rows(tmp_path / "rows.jsonl", [valid_rows()[0], "nope"])
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(raw)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 1
    assert "line 2: invalid JSON" in result.stderr


# ---------------------------------------------------------------- your own data: shapes, files, split, hygiene


def run_format(tmp_path, raw: Path, tiny_base, params: Path | None = None, source: Path | None = None) -> dict:
    out = tmp_path / "out"
    argv = ["--params", str(params or ROOT / "params.yaml"), "--raw", str(raw), "--tokenizer", str(tiny_base),
            "--out-dir", str(out), "--metrics", str(tmp_path / "format.json"),
            "--per-function", str(tmp_path / "per_function.json"), "--record", str(tmp_path / "record.json")]
    format_stage.main(argv + (["--source", str(source)] if source else []))
    return {"metrics": json.loads((tmp_path / "format.json").read_text()),
            "functions": {r["function"]: r for r in json.loads((tmp_path / "per_function.json").read_text())},
            "record": json.loads((tmp_path / "record.json").read_text()),
            **{name: [r for _, r, _ in read_jsonl(out / f"{name}.jsonl")] for name in ("train", "eval", "rejected", "hygiene")}}


@pytest.mark.parametrize("shape", ["mobile_actions", "openai", "xlam"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_each_shape_in_each_file_type_previews_as_its_rows_render(tmp_path, own_rows, row_writer, shape, suffix, capsys):
    """The file type changes nothing: each stored row renders as the in-memory row it was written from."""
    path = row_writer(tmp_path / f"rows{suffix}", own_rows[shape])
    format_stage.main(["--preview", str(path), "--params", str(ROOT / "params.yaml")])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [fg.render_row(row_shapes.normalize_row(r, "auto", format_stage.mobile_actions.INSTRUCTION).row)
                for r in own_rows[shape]]
    assert [{"prompt": p["prompt"], "completion": p["completion"]} for p in printed] == expected
    assert {p["shape"] for p in printed} == {shape}
    kind = "line" if suffix == ".jsonl" else "row index"
    first = 1 if suffix == ".jsonl" else 0
    assert [p["where"] for p in printed] == [f"{path} {kind} {first + i}" for i in range(len(own_rows[shape]))]


def test_a_row_renders_only_the_properties_it_declares_through_a_unifying_parquet(tmp_path, row_builders, row_writer, capsys):
    """pyarrow writes every tool's properties into every row's struct (as nulls): only the row's own are rendered."""
    light = {"name": "turn_on_light", "description": "Light.", "parameters": {"type": "OBJECT", "properties": {
        "room": {"type": "STRING", "description": "Room."}}, "required": ["room"]}}
    alarm = {"name": "set_alarm", "description": "Alarm.", "parameters": {"type": "OBJECT", "properties": {
        "hour": {"type": "INTEGER", "description": "Hour."}, "label": {"type": "STRING", "description": "Label."}}}}
    rows = [row_builders["mobile_actions"]("Kitchen light", [("turn_on_light", {"room": "kitchen"})], "train", tools=[light]),
            row_builders["mobile_actions"]("Alarm at 7", [("set_alarm", {"hour": 7})], "eval", tools=[alarm])]
    path = row_writer(tmp_path / "structs.parquet", rows, struct=True)
    stored = pq.read_table(path).to_pylist()[0]["tools"][0]["function"]["parameters"]["properties"]
    assert stored["hour"] is None and stored["label"] is None  # the trap is in the file itself
    format_stage.main(["--preview", str(path), "--params", str(ROOT / "params.yaml")])
    first, second = (json.loads(line)["prompt"] for line in capsys.readouterr().out.splitlines())
    assert "properties:{room:{description:<escape>Room.<escape>,type:<escape>STRING<escape>}}" in first
    assert "hour" not in first and "label" not in first and "room" not in second
    assert "call:set_alarm" not in first


def test_mixed_folder_through_fetch_and_format(tmp_path, mixed_folder, tiny_base, params_with):
    """Three shapes across JSONL, JSON and Parquet; the split written; planted problems reported."""
    from stages import fetch
    from pipeline.params import load_params

    params = params_with({"data.source": "local", "data.path": str(mixed_folder["folder"]), "format.on_invalid": "skip"})
    fetch.fetch_rows(load_params("data", path=params), tmp_path / "raw")
    got = run_format(tmp_path, tmp_path / "raw" / "dataset.jsonl", tiny_base, params, tmp_path / "raw" / "source.json")
    m = got["metrics"]
    assert m["rows_read"] == mixed_folder["rows"] and m["rows_rejected"] == 1
    assert (m["rows_shape_mobile_actions"], m["rows_shape_openai"], m["rows_shape_xlam"]) == (8, 7, 7)
    assert m["train_rows"] + m["eval_rows"] == 22 and m["eval_rows"] >= 4
    assert (m["rows_split_from_data"], m["rows_split_by_rule"]) == (5, 17)
    assert (m["duplicate_rows"], m["leaked_requests"], m["type_mismatches"], m["rows_with_type_mismatch"]) == (1, 1, 2, 2)
    assert got["record"]["xlam_developer_text"] == "You are a model that can do function calling with the following functions"
    assert got["rejected"] == [{"line": got["rejected"][0]["line"], "where": mixed_folder["rejected_where"], "shape": "xlam",
                                "reasons": ["calls undeclared tool 'open_door'"]}]
    checks = {}
    for r in got["hygiene"]:
        checks.setdefault(r["check"], []).append(r)
    folder = mixed_folder["folder"]
    # folder files are read in sorted order: mobile_actions.json before mobile_actions.jsonl
    assert [(r["where"], r["same_as"]) for r in checks["duplicate"]] == [
        (f"{folder}/mobile_actions.jsonl line 1", f"{folder}/mobile_actions.json row index 2")]
    assert checks["leak"][0]["eval"] == [f"{folder}/mobile_actions.jsonl line 3"]
    assert sorted((r["where"], r["argument"], r["declared"]) for r in checks["type_mismatch"]) == [
        (f"{folder}/openai.jsonl line 3", "unit", "enum"), (f"{folder}/xlam.jsonl line 3", "temperature", "INTEGER")]
    assert set(got["functions"]) == {"turn_on_light", "set_thermostat", "play_music"}
    for row in got["functions"].values():  # stratified: every function is in eval
        assert row["eval_rows"] >= 1 and row["train_rows"] >= 1
    assert sum(r["train_rows"] + r["eval_rows"] for r in got["functions"].values()) == 22 + 1  # 22 rows, one calls two functions
    # the metrics keys do not depend on the data: no function names, no token lengths, no params
    assert not [k for k in m if any(n in k for n in got["functions"]) or "tokens" in k or k in ("max_length", "eval_fraction")]
    examples = got["train"] + got["eval"]
    expected_places = set()
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl":
            expected_places |= {f"{path} line {i + 1}" for i in range(len(path.read_text().splitlines()))}
        else:
            count = len(json.loads(path.read_text())) if path.suffix == ".json" else pq_rows(path)
            expected_places |= {f"{path} row index {i}" for i in range(count)}
    assert {ex["where"] for ex in examples} | {mixed_folder["rejected_where"]} == expected_places  # every row, named
    assert len(examples) + 1 == len(expected_places)
    by_where = {ex["where"]: ex for ex in examples}
    assert by_where[f"{folder}/mobile_actions.jsonl line 1"]["split"] == "train"  # its metadata
    assert by_where[f"{folder}/mobile_actions.jsonl line 3"]["split"] == "eval"
    assert {ex["split_from"] for ex in examples if ex["shape"] == "xlam"} == {"rule"}


def pq_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def test_on_leak_error_and_drop_from_train(tmp_path, row_builders, row_writer, tiny_base, params_with):
    build = row_builders["mobile_actions"]
    calls = [("turn_on_light", {"room": "hall"})]
    raw = row_writer(tmp_path / "rows.jsonl", [build("Hall light", calls, "train"), build("hall  LIGHT", calls, "train"),
                                               build("Hall light", calls, "eval"), build("Garage light", calls, "eval")])
    with pytest.raises(UserError) as err:
        run_format(tmp_path, raw, tiny_base, params_with({"format.on_leak": "error"}, "error.yaml"))
    assert str(err.value).startswith("1 user request(s) appear in both train and eval: 'Hall light' "
                                     f"({raw} line 1 in train, {raw} line 3 in eval)")
    assert "format.on_leak: drop_from_train" in str(err.value)
    got = run_format(tmp_path, raw, tiny_base, params_with({"format.on_leak": "drop_from_train"}, "drop.yaml"))
    assert got["train"] == [] and [ex["line"] for ex in got["eval"]] == [3, 4]
    m = got["metrics"]
    assert (m["leaked_requests"], m["leaked_train_rows"], m["train_rows_dropped_leaked"], m["train_rows"]) == (1, 2, 2, 0)
    warned = run_format(tmp_path, raw, tiny_base)["metrics"]
    assert (warned["leaked_requests"], warned["train_rows_dropped_leaked"], warned["train_rows"]) == (1, 0, 2)


def test_xlam_developer_text_param_and_its_record(tmp_path, own_rows, row_writer, tiny_base, params_with):
    raw = row_writer(tmp_path / "rows.jsonl", own_rows["xlam"])
    got = run_format(tmp_path, raw, tiny_base, params_with({"format.xlam_developer_text": "Pick a smart-home function."}))
    assert got["record"]["xlam_developer_text"] == "Pick a smart-home function."
    assert "xlam_developer_text" not in got["metrics"]  # a string is not a figure to compare
    assert all(ex["prompt"].startswith("<bos><start_of_turn>developer\nPick a smart-home function.<start_function_declaration>")
               for ex in got["train"] + got["eval"])
    assert got["metrics"]["rows_shape_xlam"] == 6


def test_rows_without_metadata_are_split_stably_when_rows_are_appended(tmp_path, row_builders, row_writer, tiny_base):
    build = row_builders["openai"]
    functions = [("turn_on_light", {"room": "r"}), ("set_thermostat", {"temperature": 20}), ("play_music", {"song": "s"})]
    rows = [build(f"request number {i}", [functions[i % 3]]) for i in range(60)]
    raw = row_writer(tmp_path / "rows.jsonl", rows[:30])
    first = run_format(tmp_path, raw, tiny_base)
    before = {ex["line"]: ex["split"] for ex in first["train"] + first["eval"]}
    assert set(before.values()) == {"train", "eval"} and first["metrics"]["rows_split_by_rule"] == 30
    for name, _ in functions:  # stratified
        assert first["functions"][name]["eval_rows"] >= 1
    with open(raw, "a", encoding="utf-8") as f:  # more rows appended, among them repeats of earlier requests
        f.writelines(json.dumps(r) + "\n" for r in rows[30:] + rows[:5])
    second = run_format(tmp_path, raw, tiny_base)
    after = {ex["line"]: ex["split"] for ex in second["train"] + second["eval"]}
    assert {line: after[line] for line in before} == before
    assert [after[61 + i] for i in range(5)] == [before[1 + i] for i in range(5)]  # a repeat follows its request
    assert second["metrics"]["leaked_requests"] == 0


def bad_row_lines(golden: list[dict]) -> list[tuple[bytes, str | None]]:
    """(stored line, the reason it is rejected or None when it is valid) for each class of hard input."""
    def row(change) -> dict:
        r = copy.deepcopy(golden[0])
        change(r)
        return r

    def deep(n):
        value = "x"
        for _ in range(n):
            value = [value]
        return value

    enc = lambda r: json.dumps(r).encode()  # noqa: E731
    email = lambda r: next(t for t in r["tools"] if t["function"]["name"] == "send_email")  # noqa: E731
    return [
        (b"\xef\xbb\xbf" + enc(golden[0]), None),                                            # a byte-order mark
        (enc(golden[1]) + b"\r", None),                                                      # CRLF
        (enc(row(lambda r: r["messages"][-1].update(content=None))), None),                  # null content with calls
        (enc(golden[0])[:-1] + b', "note": "caf\xe9"}', "not UTF-8 text (byte 0xe9"),
        (enc(row(lambda r: r["messages"][-1]["tool_calls"][0]["function"]["arguments"].update(to=deep(70)))),
         "arguments nested deeper than 64 levels"),
        (enc(row(lambda r: r["tools"][0]["function"]["parameters"].update(extra=deep(150)))), "nested deeper than 100 levels"),
        (b"{\"messages\": " + b"[" * 1500 + b"]" * 1500 + b"}", "nested deeper than 100 levels"),
        (enc(row(lambda r: r.update(pad="x" * 5000))), "over format.max_row_bytes (4,096)"),
        (enc(row(lambda r: email(r)["function"]["parameters"]["properties"]["to"].update(type=["string", "null"]))),
         "parameters.properties.to.type must be a type name"),
        (enc(row(lambda r: r["tools"][0]["function"]["parameters"].update(type=1))), "parameters.type must be a type name"),
        (enc(row(lambda r: r["messages"][1].update(content=None))), "messages[1] (user): content must be text, got null"),
        (enc(row(lambda r: r["messages"][1].update(content=42))), "messages[1] (user): content must be text, got integer"),
        (enc(row(lambda r: r["messages"][0].update(content=None))), "messages[0] (developer): content must be text, got null"),
        (enc(row(lambda r: r["messages"][0].update(content=["a"]))), "messages[0] (developer): content must be text, got list"),
    ]


def test_every_class_of_hard_input_gets_a_row_numbered_verdict(tmp_path, tiny_base, params_with):
    lines = bad_row_lines(valid_rows())
    raw = tmp_path / "rows.jsonl"
    raw.write_bytes(b"".join(data + b"\n" for data, _ in lines))
    params = params_with({"format.max_row_bytes": 4096})
    with pytest.raises(UserError) as err:
        run_format(tmp_path, raw, tiny_base, params)
    message = str(err.value)
    invalid = [(n, reason) for n, (_, reason) in enumerate(lines, 1) if reason]
    assert message.startswith(f"{len(invalid)} invalid row(s): ")
    for n, reason in invalid:
        assert f"{raw} line {n}: " in message and reason in message.split(f"{raw} line {n}: ")[1].split(f"; {raw} line")[0], reason
    got = run_format(tmp_path, raw, tiny_base, params_with({"format.max_row_bytes": 4096, "format.on_invalid": "skip"}, "skip.yaml"))
    assert sorted(ex["line"] for ex in got["train"] + got["eval"]) == [1, 2, 3]
    assert [r["line"] for r in got["rejected"]] == [n for n, _ in invalid]
    assert got["metrics"]["rows_rejected"] == len(invalid)
    # the preview gives the same verdicts, with exit status 2 and no traceback
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(raw), "--params", str(params)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stdout.splitlines()) == 3 and f"{len(invalid)} invalid row(s)" in result.stderr


def test_preview_of_a_folder_names_files_and_row_indexes(tmp_path, mixed_folder):
    result = subprocess.run([sys.executable, "-m", "stages.format", "--preview", str(mixed_folder["folder"])],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"1 invalid row(s): {mixed_folder['rejected_where']}: calls undeclared tool 'open_door'" in result.stderr
    assert len(result.stdout.splitlines()) == mixed_folder["rows"] - 1


# ---------------------------------------------------------------- property: random bytes and JSON, never a traceback

JSON_VALUES = json_values()


@st.composite
def mutated_rows(draw) -> bytes:
    """A golden row with one value somewhere inside replaced by a random JSON value."""
    row = replace_somewhere(draw, copy.deepcopy(draw(st.sampled_from(valid_rows()))), max_depth=6)
    return json.dumps(row).encode()


random_lines = st.one_of(st.binary(max_size=40), JSON_VALUES.map(lambda v: json.dumps(v).encode()), mutated_rows())


@pytest.mark.integration  # 100 runs of the format stage (~30 s)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=st.lists(st.tuples(st.booleans(), random_lines), min_size=1, max_size=8),
       on_invalid=st.sampled_from(["skip", "error"]))
def test_any_input_gets_a_verdict_per_line_and_valid_rows_are_formatted(tiny_base, entries, on_invalid):
    golden = [json.dumps(r).encode() for r in valid_rows()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chunks, planted, line = [], [], 1
        for i, (plant, data) in enumerate(entries):
            if plant:
                data = golden[i % len(golden)]
                planted.append(line)
            chunks.append(data + b"\n")
            line += data.count(b"\n") + 1
        raw = tmp / "rows.jsonl"
        raw.write_bytes(b"".join(chunks))
        stored = raw.read_bytes().split(b"\n")
        stored[0] = stored[0].removeprefix(b"\xef\xbb\xbf")
        nonblank = {n for n, data in enumerate(stored, 1) if data.strip()}
        params = tmp / "params.yaml"
        params.write_text((ROOT / "params.yaml").read_text().replace("on_invalid: error ", f"on_invalid: {on_invalid} "))
        stderr, code = io.StringIO(), 0
        with contextlib.redirect_stderr(stderr):
            try:
                run_main(format_stage.main, ["--params", str(params), "--raw", str(raw), "--tokenizer", str(tiny_base),
                                             "--out-dir", str(tmp / "out"), "--metrics", str(tmp / "m.json"),
                                             "--per-function", str(tmp / "f.json"), "--record", str(tmp / "r.json")])
            except SystemExit as exit_:
                code = exit_.code
        assert code in (0, 2) and "Traceback" not in stderr.getvalue()
        if code == 2:
            assert on_invalid == "error" or not planted
            message = stderr.getvalue()
            named = {int(n) for n in re.findall(rf"{re.escape(str(raw))} line (\d+): ", message)}
            assert named or "no valid rows" in message  # the message names the lines
            assert named <= nonblank - set(planted)  # and only lines that are not valid rows
            return
        formatted = [ex["line"] for name in ("train", "eval") for _, ex, _ in read_jsonl(tmp / "out" / f"{name}.jsonl")]
        records = [r for _, r, _ in read_jsonl(tmp / "out" / "rejected.jsonl")]
        assert all(r["where"] == f"{raw} line {r['line']}" and r["reasons"] for r in records)  # each names its line
        rejected = [r["line"] for r in records]
        assert set(planted) <= set(formatted)  # every valid row still formatted
        assert not set(formatted) & set(rejected) and set(formatted) | set(rejected) == nonblank  # one verdict a line


def test_dvc_yaml_declares_what_the_format_stage_writes(formatted_sample):
    """Each output flag of the format cmd is declared once, as a metric, a plot or an out (cache: false for the small
    git-tracked files), and the per-function plot's axes are fields of the records the stage writes."""
    import shlex

    import yaml

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["format"]
    argv = shlex.split(stage["cmd"])
    flags = dict(zip(argv[3::2], argv[4::2]))
    declared = {key: {next(iter(o)) if isinstance(o, dict) else o: (o[next(iter(o))] if isinstance(o, dict) else {})
                      for o in stage.get(key, [])} for key in ("metrics", "plots", "outs")}
    assert set(declared["metrics"]) == {flags["--metrics"]}
    assert set(declared["plots"]) == {flags["--per-function"]}
    assert set(declared["outs"]) == {flags["--out-dir"], flags["--record"]}
    assert declared["outs"][flags["--record"]]["cache"] is False and declared["metrics"][flags["--metrics"]]["cache"] is False
    plot = declared["plots"][flags["--per-function"]]
    records = json.loads((formatted_sample / "per_function.json").read_text())
    assert {plot["x"], plot["y"]} <= set(records[0]) and plot["template"] == "bar_horizontal"
