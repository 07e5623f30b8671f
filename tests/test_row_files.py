"""pipeline/row_files.py: files read as stored, gathered into one JSONL whose lines map back to each file."""

from __future__ import annotations

import json

import pytest

from pipeline import row_files
from pipeline.common import UserError


def lines_of(path, max_bytes=1 << 20):
    return list(row_files.read_lines(path, max_bytes))


def test_read_lines_accepts_a_bom_and_crlf_and_keeps_bad_bytes_for_a_verdict(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(row_files.BOM + b'{"a": 1}\r\n\r\n{"b": "\xff"}\r\n  \n{"c": 3}')
    assert lines_of(path) == [(1, b'{"a": 1}', ""), (3, b'{"b": "\xff"}', ""), (5, b'{"c": 3}', "")]
    assert row_files.parse_row(b'{"a": 1}') == ({"a": 1}, "")
    assert row_files.parse_row(b'{"b": "\xff"}') == (None, "not UTF-8 text (byte 0xff at byte 8)")


def test_a_lone_cr_is_not_a_line_break(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a":\r1}\n{"b": 2}\n')
    assert [n for n, _, _ in lines_of(path)] == [1, 2]
    assert row_files.parse_row(lines_of(path)[0][1]) == ({"a": 1}, "")


def test_an_enormous_row_is_rejected_unread_and_the_rest_is_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"big": "' + b"x" * 3_000_000 + b'"}\n{"c": 3}\n')
    got = lines_of(path, max_bytes=100_000)
    assert got[0] == (1, b'{"a": 1}', "") and got[2] == (3, b'{"c": 3}', "")
    assert got[1][0] == 2 and got[1][1] is None and "over format.max_row_bytes (100,000)" in got[1][2]


def test_json_list_items_are_split_without_parsing(tmp_path):
    path = tmp_path / "rows.json"
    path.write_bytes(b'[\n  {"a": [1, {"b": "x,]}"}]},\n  {"broken": },\n  {"c":\n "d"}\n]\n')
    items = list(row_files.json_items(path))
    assert [row_files.parse_row(i)[0] for i in items] == [{"a": [1, {"b": "x,]}"}]}, None, {"c": "d"}]
    assert "invalid JSON" in row_files.parse_row(items[1])[1]


def test_a_line_break_inside_a_json_string_stays_invalid(tmp_path):
    path = tmp_path / "rows.json"
    path.write_bytes(b'[{"a": "one\ntwo"}, {"b": 1}]')
    first, second = (row_files.parse_row(i) for i in row_files.json_items(path))
    assert first[0] is None and "Invalid control character" in first[1]
    assert second == ({"b": 1}, "")


@pytest.mark.parametrize("content, rows", [
    (b'{"rows": [{"a": 1}, {"a": 2}]}', [{"a": 1}, {"a": 2}]),
    (b'{"a": 1}\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),  # JSONL saved as .json
    (row_files.BOM + b'[{"a": 1}]', [{"a": 1}]),
    (b'{"query": "one row"}', [{"query": "one row"}]),
    (b"[]", []),
    (b'[{"a": 1},]', [{"a": 1}, None]),  # a stray comma: an invalid item
])
def test_json_file_forms(tmp_path, content, rows):
    path = tmp_path / "rows.json"
    path.write_bytes(content)
    assert [row_files.parse_row(i)[0] for i in row_files.json_items(path)] == rows


@pytest.mark.parametrize("content, message", [
    (b'[{"a": 1}, {"b": 2}', "not closed with ']' (after 1 row(s))"),
    (b'[{"a": 1}, {"b": "open}]', "row index 1 has a string that is never closed"),
    (b'[{"a": 1}] trailing', "text after the end of the JSON list"),
    (b'{"a": ', "invalid JSON at line 1"),
    (b'\xff\xfe{}', "not UTF-8 text"),
    (b'"just text"', "expected a JSON list of rows"),
    (b"{\"a\": " * 5000 + b"1" + b"}" * 5000, "cannot be read as JSON (nested deeper than 100 levels)"),
])
def test_broken_json_files_are_one_sentence(tmp_path, content, message):
    path = tmp_path / "rows.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        list(row_files.json_items(path))


def test_parquet_struct_nulls_are_absent_and_json_text_stays_text(tmp_path, row_writer):
    rows = [{"tools": [{"function": {"name": "a", "parameters": {"properties": {"x": {"type": "STRING"}}}}}], "n": 1},
            {"tools": [{"function": {"name": "b", "parameters": {"properties": {"y": {"type": "INTEGER"}}}}}]}]
    structs = row_writer(tmp_path / "s.parquet", rows, struct=True)
    assert [json.loads(i) for i in row_files.parquet_items(structs)] == rows  # not {"x": ..., "y": null}
    text = row_writer(tmp_path / "t.parquet", rows)
    first = json.loads(next(row_files.parquet_items(text)))
    assert isinstance(first["tools"], str) and json.loads(first["tools"]) == rows[0]["tools"]


def test_parquet_bytes_that_are_not_utf8_reach_the_row_verdict(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"query": pa.array([b"ok", b"\xffbad"], pa.binary())}), tmp_path / "b.parquet")
    first, second = row_files.parquet_items(tmp_path / "b.parquet")
    assert row_files.parse_row(first) == ({"query": "ok"}, "")
    assert "not UTF-8" in row_files.parse_row(second)[1]


def test_a_broken_parquet_file_is_one_sentence(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        list(row_files.parquet_items(tmp_path / "x.parquet"))


def test_gather_records_which_line_came_from_which_file(tmp_path, row_writer):
    folder = tmp_path / "in"
    a = row_writer(folder / "a.jsonl", [{"n": 1}, {"n": 2}])
    (folder / "b.jsonl").write_bytes(row_files.BOM + b'{"n": 3}\n\n{"n": 4}')  # a BOM, a blank line, no last newline
    row_writer(folder / "c.json", [{"n": 5}, {"n": 6}])
    row_writer(folder / "d.parquet", [{"n": 7}])
    files = row_files.local_files(folder)
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl", "c.json", "d.parquet"]
    out = tmp_path / "dataset.jsonl"
    segments = row_files.gather([(f, f.name, None) for f in files], out)
    assert [(s["file"], s["format"], s["first_line"], s["lines"]) for s in segments] == [
        ("a.jsonl", "jsonl", 1, 2), ("b.jsonl", "jsonl", 3, 3), ("c.json", "json", 6, 2), ("d.parquet", "parquet", 8, 1)]
    places = {json.loads(data)["n"]: row_files.locate(segments, line)[0] for line, data, _ in lines_of(out)}
    assert places == {1: "a.jsonl line 1", 2: "a.jsonl line 2", 3: "b.jsonl line 1", 4: "b.jsonl line 3",
                      5: "c.json row index 0", 6: "c.json row index 1", 7: "d.parquet row index 0"}
    # one JSONL file alone is copied byte for byte
    assert row_files.gather([(a, "a.jsonl", "eval")], tmp_path / "one.jsonl")[0]["split"] == "eval"
    assert (tmp_path / "one.jsonl").read_bytes() == a.read_bytes()


def test_local_files_errors(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="not a .jsonl, .json or .parquet file"):
        row_files.local_files(tmp_path / "rows.csv")
    with pytest.raises(UserError, match="holds no .jsonl, .json or .parquet files"):
        row_files.local_files(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        row_files.local_files(tmp_path / "nope")
