"""Shared fixtures: a tiny random Gemma 3 base model with the real tokenizer, the committed
sample formatted into prompt/completion examples, the golden conformance rows (FORMAT.md: the
exact text the real FunctionGemma chat template rendered for them), and hand-written rows of
each row shape (Mobile Actions, OpenAI-style, xLAM) stored as JSONL, JSON or Parquet.

The model and the formatted sample are built once per test session (about 25 s, mostly converting the
tokenizer out of the offline GGUF). Set PIPELINE_TEST_CACHE=/some/dir to keep
them between sessions while developing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.tiers",  # the test tiers and the rule that keeps `make test` fast
    "pytester",  # tests/test_tiers.py runs a throwaway test file through that rule
]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
# The golden conformance fixtures (FORMAT.md): three rows and the exact text the real FunctionGemma chat
# template rendered for each, taken from Google's published notebook outputs. They are rendered facts of the
# format, committed under tests/fixtures so every clone runs them (the team's ../shared/fixtures holds the
# same files; tests/test_functiongemma.py checks they agree when it is there).
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN_ROWS = FIXTURES / "functiongemma_golden_rows.jsonl"
GOLDEN_EXPECTED = FIXTURES / "functiongemma_golden_expected.json"
GOLDEN_IDS = ["one_call", "two_calls", "openai_shape"]


def _golden_cases() -> list[tuple[dict, dict]]:
    rows = [json.loads(line) for line in GOLDEN_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(zip(rows, json.loads(GOLDEN_EXPECTED.read_text(encoding="utf-8"))))


def pytest_generate_tests(metafunc):
    """A test taking `golden_case` runs once per golden (row, {prompt, completion}) pair."""
    if "golden_case" in metafunc.fixturenames:
        metafunc.parametrize("golden_case", _golden_cases(), ids=GOLDEN_IDS)


@pytest.fixture(scope="session")
def golden_rows() -> list[dict]:
    """The golden rows (Mobile Actions schema and the OpenAI-style shape)."""
    return [row for row, _ in _golden_cases()]


@pytest.fixture(scope="session")
def golden_expected() -> list[dict]:
    """{prompt, completion} the real chat template rendered for each golden row."""
    return [expected for _, expected in _golden_cases()]


def _cache_dir(tmp_path_factory, name: str) -> Path:
    cache = os.environ.get("PIPELINE_TEST_CACHE")
    if cache:
        return Path(cache) / name
    return tmp_path_factory.mktemp(name)


def _tiny_params():
    from pipeline.params import load_params

    model = load_params("model", path=ROOT / "params.yaml")
    return type(model)(source="tiny", hub_repo=model.hub_repo, revision=model.revision, path="", tiny=model.tiny)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """models/base/ as `model.source: tiny` writes it (random 2-layer Gemma 3)."""
    from stages.fetch import fetch_model

    folder = _cache_dir(tmp_path_factory, "base-tiny")
    if not (folder / "source.json").exists():
        fetch_model(_tiny_params(), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_base):
    """The tiny base's tokenizer: Gemma 3's 262k vocabulary with FunctionGemma's tokens at ids 46-52."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture(scope="session")
def formatted_sample(tmp_path_factory, tiny_base) -> Path:
    """data/formatted/ for the committed sample (train.jsonl, eval.jsonl; format.json, per_function.json and
    record.json beside them)."""
    from stages import format as format_stage

    folder = _cache_dir(tmp_path_factory, "formatted")
    if not (folder / "eval.jsonl").exists():
        metrics = folder / "format.json"
        format_stage.main(["--params", str(ROOT / "params.yaml"), "--raw", str(SAMPLE), "--tokenizer", str(tiny_base),
                           "--out-dir", str(folder), "--metrics", str(metrics),
                           "--per-function", str(folder / "per_function.json"), "--record", str(folder / "record.json")])
    return folder


@pytest.fixture
def tiny_model_copy(tiny_base, tmp_path) -> Path:
    """A writable copy of the tiny base (for tests that modify or train it)."""
    dest = tmp_path / "model"
    shutil.copytree(tiny_base, dest)
    return dest


# ---------------------------------------------------------------- your own data: hand-written rows of each shape
#
# One small app (three functions) written three ways: Mobile Actions rows, OpenAI-style chat rows
# and xLAM / APIGen query/tools/answers rows. `write_row_file` stores rows as JSONL, a JSON list
# or Parquet (nested fields as JSON text, as hub data sets store them, or as Parquet structs).

THERMOSTAT = {"name": "set_thermostat", "description": "Sets the thermostat.",
              "parameters": {"type": "OBJECT", "properties": {
                  "temperature": {"type": "INTEGER", "description": "Target temperature."},
                  "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit."}},
                  "required": ["temperature"]}}
LIGHT = {"name": "turn_on_light", "description": "Turns on a light.",
         "parameters": {"type": "OBJECT", "properties": {"room": {"type": "STRING", "description": "Room name."}},
                        "required": ["room"]}}
MUSIC = {"name": "play_music", "description": "Plays a song.",
         "parameters": {"type": "OBJECT", "properties": {
             "song": {"type": "STRING", "description": "Song title."},
             "volume": {"type": "INTEGER", "description": "Volume from 0 to 10."}}, "required": ["song"]}}
DEVELOPER = "You are a model that can do function calling with the following functions"

# (request, [(function, arguments)], split or None): six per shape, every request different
MOBILE_REQUESTS = [
    ("Turn on the kitchen light", [("turn_on_light", {"room": "kitchen"})], "train"),
    ("Set the heating to 21 degrees", [("set_thermostat", {"temperature": 21, "unit": "celsius"})], "train"),
    ("Play Yesterday", [("play_music", {"song": "Yesterday"})], "eval"),
    ("Light up the garage", [("turn_on_light", {"room": "garage"})], None),
    ("Play Imagine at volume 4", [("play_music", {"song": "Imagine", "volume": 4})], None),
    ("Make it 68 fahrenheit", [("set_thermostat", {"temperature": 68, "unit": "fahrenheit"})], None),
]
OPENAI_REQUESTS = [
    ("Switch on the bedroom light", [("turn_on_light", {"room": "bedroom"})], None),
    ("Heat the flat to 23", [("set_thermostat", {"temperature": 23})], None),
    ("Put on Hey Jude, quietly", [("play_music", {"song": "Hey Jude", "volume": 2})], None),
    ("Hall light on please", [("turn_on_light", {"room": "hall"})], None),
    ("I want Let It Be", [("play_music", {"song": "Let It Be"})], None),
    ("Cool it down to 18 celsius", [("set_thermostat", {"temperature": 18, "unit": "celsius"})], None),
]
XLAM_REQUESTS = [
    ("Please light the living room", [("turn_on_light", {"room": "living room"})], None),
    ("Thermostat to 20, and play Help!", [("set_thermostat", {"temperature": 20}), ("play_music", {"song": "Help!"})], None),
    ("Play Something at volume 7", [("play_music", {"song": "Something", "volume": 7})], None),
    ("Bathroom light", [("turn_on_light", {"room": "bathroom"})], None),
    ("Set 19 degrees celsius", [("set_thermostat", {"temperature": 19, "unit": "celsius"})], None),
    ("Play Blackbird", [("play_music", {"song": "Blackbird"})], None),
]


def _lower_types(schema):
    """The same schema as OpenAI-style data writes it (lower-case JSON-schema types)."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    return schema


_XLAM_TYPES = {"INTEGER": "int", "STRING": "str", "NUMBER": "float", "BOOLEAN": "bool"}


def _xlam_tool(tool: dict) -> dict:
    """A declaration as xLAM writes it: {name: {type: "int", description, default}}, Python type names."""
    props, required = tool["parameters"]["properties"], tool["parameters"].get("required", [])
    params = {}
    for name, spec in props.items():
        entry = {"description": spec["description"], "type": _XLAM_TYPES[spec["type"]] + ("" if name in required else ", optional")}
        entry["default"] = "" if name in required else ("celsius" if name == "unit" else 5)
        params[name] = entry
    return {"name": tool["name"], "description": tool["description"], "parameters": params}


def mobile_row(request: str, calls, split=None, tools=(LIGHT, THERMOSTAT, MUSIC)) -> dict:
    row = {"tools": [{"function": t} for t in tools],
           "messages": [{"role": "developer", "content": DEVELOPER}, {"role": "user", "content": request},
                        {"role": "assistant", "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in calls]}]}
    return {"metadata": split, **row} if split else row


def openai_row(request: str, calls, split=None, tools=(LIGHT, THERMOSTAT, MUSIC)) -> dict:
    row = {"tools": [{"type": "function", "function": _lower_types(t)} for t in tools],
           "messages": [{"role": "system", "content": "You control a smart home."}, {"role": "user", "content": request},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                            for i, (n, a) in enumerate(calls)]}]}
    return {"metadata": split, **row} if split else row


def xlam_row(request: str, calls, split=None, tools=(LIGHT, THERMOSTAT, MUSIC), row_id: int = 0) -> dict:
    row = {"id": row_id, "query": request, "tools": json.dumps([_xlam_tool(t) for t in tools]),
           "answers": json.dumps([{"name": n, "arguments": a} for n, a in calls])}
    return {"metadata": split, **row} if split else row


ROW_BUILDERS = {"mobile_actions": mobile_row, "openai": openai_row, "xlam": xlam_row}
REQUESTS = {"mobile_actions": MOBILE_REQUESTS, "openai": OPENAI_REQUESTS, "xlam": XLAM_REQUESTS}


def write_rows_file(path: Path, rows: list, struct: bool = False) -> Path:
    """Store rows as the suffix says: .jsonl (one a line), .json (an indented list), .parquet.

    Parquet: nested fields (tools, messages, answers) as JSON text columns, as hub data sets
    store them; struct=True stores them as Parquet structs instead (pyarrow unifies the struct
    schema across rows: every row gets every other row's fields as nulls).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        stored = rows if struct else [
            {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows]
        columns = sorted({k for r in stored for k in r})
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in stored]), path)
    return path


@pytest.fixture(scope="session")
def own_rows() -> dict[str, list[dict]]:
    """shape -> its six hand-written rows (see REQUESTS)."""
    return {shape: [ROW_BUILDERS[shape](req, calls, split) for req, calls, split in REQUESTS[shape]] for shape in REQUESTS}


@pytest.fixture
def params_with(tmp_path):
    """params_with({"format.on_invalid": "skip", ...}) -> a copy of params.yaml with those keys set (as `dvc exp run -S` sets them)."""
    from tests.helpers import set_params

    def write(updates: dict, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        shutil.copy(ROOT / "params.yaml", path)
        set_params(path, updates)
        return path

    return write


@pytest.fixture(scope="session")
def row_builders() -> dict:
    """shape -> builder(request, [(function, arguments)], split=None, tools=...) of one row of that shape."""
    return ROW_BUILDERS


@pytest.fixture
def row_writer():
    """write_rows_file(path, rows, struct=False): store rows as JSONL, JSON or Parquet by the suffix."""
    return write_rows_file


@pytest.fixture
def mixed_folder(tmp_path, own_rows) -> dict:
    """A folder mixing the three shapes across JSONL, JSON and Parquet files, with planted problems.

    Each shape's rows 0-1 are in its .jsonl, 2-3 in its .json, 4-5 in its .parquet. Planted: one
    exact duplicate (Mobile Actions row 0 again, in another file), one leaked request (an eval row
    asking what a train row asks, in other case and spacing), two argument values that contradict
    their declaration (a string where INTEGER is declared; a unit outside the enum), one invalid
    row (an xLAM answer calling an undeclared tool, at xlam.parquet row index 2).
    """
    folder = tmp_path / "mydata"
    planted = {
        "mobile_actions": [mobile_row("turn on the   KITCHEN light", [("turn_on_light", {"room": "kitchen"})], "eval"),
                           own_rows["mobile_actions"][0]],
        "openai": [openai_row("Make it cosy, 22 kelvin", [("set_thermostat", {"temperature": 22, "unit": "kelvin"})])],
        "xlam": [xlam_row("Warm it up", [("set_thermostat", {"temperature": "warm"})], row_id=7),
                 xlam_row("Open the garage door", [("open_door", {"door": "garage"})], row_id=8)],
    }
    for shape, rows in own_rows.items():
        write_rows_file(folder / f"{shape}.jsonl", rows[0:2] + planted[shape][:1])
        write_rows_file(folder / f"{shape}.json", rows[2:4] + planted[shape][1:2] if shape == "mobile_actions" else rows[2:4])
        write_rows_file(folder / f"{shape}.parquet", rows[4:6] + (planted[shape][1:] if shape == "xlam" else []))
    return {"folder": folder, "rows": sum(len(r) for r in own_rows.values()) + 5,
            "rejected_where": f"{folder}/xlam.parquet row index 2"}
