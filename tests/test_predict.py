"""The predict command (commands/predict.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from pipeline import functiongemma as fg
from pipeline import mobile_actions
from commands import predict
from pipeline.common import UserError

ROOT = Path(__file__).resolve().parents[1]
NOW = "2026-01-16T00:50:30"


def test_default_tools_are_the_seven_mobile_actions_functions_as_the_data_declares_them(golden_rows):
    rows = [r for r in golden_rows if len(r["tools"]) == 7]
    assert rows
    for row in rows:
        assert {t["function"]["name"]: t for t in row["tools"]} == {t["function"]["name"]: t for t in mobile_actions.TOOLS}


def test_prompt_is_the_data_sets_prompt_for_the_same_moment_and_request(golden_rows):
    row = golden_rows[0]
    developer, user = row["messages"][0], row["messages"][1]
    now = datetime.fromisoformat(NOW)
    assert predict.developer_message(now) == developer  # same wording, date, time and day of week
    assert predict.build_prompt(user["content"], row["tools"], now) == fg.render_row(row)["prompt"]


def test_developer_message_names_the_day_of_week():
    message = predict.developer_message(datetime(2024, 10, 20, 14, 27, 48))["content"]
    assert message.startswith("Current date and time given in YYYY-MM-DDTHH:MM:SS format: 2024-10-20T14:27:48\n")
    assert "Day of week is Sunday\n" in message


def test_tools_file_wrapped_bare_or_under_a_key(tmp_path):
    bare = [{"name": "ping", "description": "Ping.", "parameters": {"type": "object", "properties": {}}}]
    (tmp_path / "a.json").write_text(json.dumps(bare))
    (tmp_path / "b.json").write_text(json.dumps({"tools": [{"type": "function", "function": bare[0]}]}))
    assert predict.read_tools(tmp_path / "a.json") == bare
    assert predict.read_tools(tmp_path / "b.json")[0]["function"]["name"] == "ping"


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{nope", "not valid JSON"),
    ("[]", "non-empty JSON list"),
    ('[{"description": "no name"}]', "tool 0 cannot be declared"),
])
def test_bad_tools_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "tools.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        predict.read_tools(path)


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("content, message", [
    (b'[{"name": "ping", "note": "caf\xe9"}]', "cannot be used: not UTF-8 text (byte 0xe9"),
    (b'[{"name": "ping", "parameters": {"type": "object", "properties": {"x": ' + nested_list(200).encode() + b"}}}]",
     "cannot be used: nested deeper than 100 levels"),
    (b"[" * 100_000, "cannot be used: nested deeper than 100 levels"),
    (b'[{"name": "ping", "parameters": {"type": ["object", "null"]}}]', "parameters.type must be a type name"),
    (b'[{"name": "ping", "parameters": {"type": "object", "properties": {"x": {"type": 3}}}}]',
     "parameters.properties.x.type must be a type name"),
    (b'[{"name": "ping", "description": 7}]', "description must be text"),
    (b'[{"name": "ping pong"}]', "cannot be called back"),
    (b'[{"name": "ping", "parameters": {"a": NaN}}]', "NaN is not a JSON value"),
    (b'"not a list"', "non-empty JSON list"),
])
def test_every_class_of_bad_tools_file_is_one_sentence(tmp_path, content, message):
    path = tmp_path / "tools.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        predict.read_tools(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_tools_file_with_a_bom_and_crlf_is_read(tmp_path):
    tools = [{"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]
    path = tmp_path / "tools.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(tools, indent=2).replace("\n", "\r\n").encode())
    assert predict.read_tools(path) == tools


def test_tools_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "MAX_TOOLS_BYTES", 64)
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([{"name": "ping", "description": "x" * 100}]))
    with pytest.raises(UserError, match="over the 64 a tools file may hold"):
        predict.read_tools(path)


def test_xlam_tools_file_declares_what_training_declared(tmp_path):
    """The same xLAM tools the format stage normalized for training give the same declaration here."""
    from pipeline import rows

    xlam = [{"name": "count", "description": "Counts.", "parameters": {
        "n": {"type": "int", "description": "How many.", "default": 3}, "tags": {"type": "List[str], optional", "description": "Tags."}}}]
    (tmp_path / "tools.json").write_text(json.dumps({"tools": json.dumps(xlam)}))  # tools as JSON text, under "tools"
    tools = predict.read_tools(tmp_path / "tools.json")
    trained = rows.normalize_row({"query": "q", "tools": json.dumps(xlam), "answers": "[{\"name\": \"count\"}]"}).row["tools"]
    assert [fg.render_declaration(t) for t in tools] == [fg.render_declaration(t) for t in trained]
    assert tools[0]["parameters"]["properties"]["tags"] == {"description": "Tags.", "type": "ARRAY", "items": {"type": "STRING"}}


def test_predict_prints_parsed_calls_as_json(tiny_base, capsys):
    predict.main(["Turn on the flashlight", "--model", str(tiny_base), "--now", NOW, "--max-new-tokens", "4"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and isinstance(json.loads(out[0]), list)


def test_predict_raw_shows_the_generated_text_first(tiny_base, capsys, monkeypatch):
    text = "<start_function_call>call:turn_on_flashlight{}<end_function_call><start_function_response>"
    monkeypatch.setattr(predict, "generate", lambda *a, **k: _generation(text))
    predict.main(["Turn on the flashlight", "--model", str(tiny_base), "--raw", "--now", NOW])
    out = capsys.readouterr().out.splitlines()
    assert out == [text, '[{"name": "turn_on_flashlight", "arguments": {}}]']


def test_predict_sends_the_request_through_the_mobile_actions_prompt(tiny_base, monkeypatch, capsys):
    seen = {}

    def fake_generate(model, tokenizer, prompts, *, max_new_tokens, batch_size, progress):
        seen.update(prompts=prompts, max_new_tokens=max_new_tokens)
        return _generation('<start_function_call>call:show_map{query:<escape>Lisbon<escape>}<end_function_call>')

    monkeypatch.setattr(predict, "generate", fake_generate)
    predict.main(["Where is Lisbon?", "--model", str(tiny_base), "--now", NOW, "--max-new-tokens", "9"])
    assert seen["prompts"] == [predict.build_prompt("Where is Lisbon?", mobile_actions.TOOLS, datetime.fromisoformat(NOW))]
    assert seen["max_new_tokens"] == 9
    assert json.loads(capsys.readouterr().out) == [{"name": "show_map", "arguments": {"query": "Lisbon"}}]


def _generation(text: str):
    from pipeline.generate import Generation

    return Generation(texts=[text], token_ids=[[1]], stopped=[True], prompt_tokens=[5], seconds=0.1)


def test_missing_model_folder_is_one_line_and_exit_code_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "commands.predict", "Turn on the flashlight", "--model", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: model folder {tmp_path / 'nope'} does not exist: build it first (`dvc repro train` writes "
        "models/finetuned, `dvc repro fetch` models/base) or pass the path of a Hugging Face model folder"
    ]


def test_bad_now_and_empty_request_are_user_errors(tiny_base):
    with pytest.raises(UserError, match="--now"):
        predict.main(["hi", "--model", str(tiny_base), "--now", "yesterday"])
    with pytest.raises(UserError, match="empty"):
        predict.main(["  ", "--model", str(tiny_base)])
