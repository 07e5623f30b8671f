"""pipeline/examples.py: the one reader of formatted examples and the one rule for N rows of a split."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common import UserError
from pipeline.examples import check_examples, example_id, read_examples, select_rows

GOOD = {"prompt": "<bos>x", "completion": "y", "target_calls": [], "tools": [], "messages": []}


def test_select_rows_is_deterministic_evenly_spaced_and_in_order():
    rows = [{"i": i} for i in range(8)]
    assert select_rows(rows, 0) == rows
    assert select_rows(rows, 50) == rows
    assert [r["i"] for r in select_rows(rows, 4)] == [0, 2, 4, 6]
    assert [r["i"] for r in select_rows(rows, 1)] == [0]
    assert select_rows(list(range(150)), 48) == select_rows(list(range(150)), 48)  # same rows every run


def test_check_examples_lists_every_bad_line():
    numbered = [(1, dict(GOOD), ""), (2, None, "invalid JSON"), (3, {**GOOD, "prompt": ""}, ""),
                (4, {**GOOD, "target_calls": [{"arguments": {}}]}, ""), (5, {**GOOD, "completion": None}, ""),
                (6, {**GOOD, "tools": "x"}, "")]
    with pytest.raises(UserError, match=r"5 bad rows \(line 2: invalid JSON; line 3: no 'prompt'.*line 4: 'target_calls'"
                                        r".*line 5: no 'completion'.*line 6: 'tools'"):
        check_examples(numbered, Path("eval.jsonl"))
    rows = check_examples(numbered[:1], Path("e"))
    assert rows[0]["_line"] == 1 and rows[0]["id"] == example_id(GOOD)


def test_ids_are_stable_and_tell_examples_apart():
    assert example_id(GOOD) == example_id(dict(GOOD, user="other", line=9))  # prompt and target only
    assert example_id(GOOD) != example_id({**GOOD, "prompt": "<bos>z"})
    assert example_id(GOOD) != example_id({**GOOD, "target_calls": [{"name": "f", "arguments": {}}]})
    assert len(example_id(GOOD)) == 16


def test_missing_or_empty_file_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="dvc repro format"):
        read_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="holds no rows"):
        read_examples(tmp_path / "empty.jsonl")
    assert read_examples(tmp_path / "empty.jsonl", allow_empty=True) == []
