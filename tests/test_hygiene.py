"""pipeline/hygiene.py: duplicates, leakage, type mismatches and functions per split, on rows built to trip them."""

from __future__ import annotations

import pytest

from pipeline import hygiene

TOOLS = [{"function": {"name": "set_alarm", "parameters": {"type": "OBJECT", "properties": {
    "hour": {"type": "INTEGER"}, "label": {"type": "STRING"}, "days": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["mon", "tue"]}},
    "repeat": {"type": "BOOLEAN"}, "volume": {"type": "NUMBER"}, "tone": {"type": "STRING", "enum": ["beep", "chime"]},
    "options": {"type": "OBJECT", "properties": {"snooze": {"type": "INTEGER"}}}}}}},
         {"function": {"name": "stop_alarm", "parameters": {"type": "OBJECT", "properties": {}}}}]


def example(request: str, split: str, calls: list[tuple[str, dict]], where: str, prompt: str = "") -> dict:
    return {"prompt": prompt or f"P:{request}", "completion": f"C:{calls}", "tools": TOOLS, "split": split,
            "target_calls": [{"name": n, "arguments": a} for n, a in calls], "request": request.casefold(),
            "user": request, "function_names": [n for n, _ in calls], "line": int(where.split()[-1]), "where": where}


@pytest.mark.parametrize("arguments, found", [
    ({"hour": 7, "label": "x", "repeat": True, "volume": 3, "days": ["mon"], "tone": "beep", "options": {"snooze": 5}}, []),
    ({"hour": 7.0}, []),  # an integer-valued number is an INTEGER
    ({"hour": "7"}, [("hour", "INTEGER", "string where INTEGER is declared")]),
    ({"hour": True}, [("hour", "INTEGER", "boolean where INTEGER is declared")]),
    ({"hour": 7.5}, [("hour", "INTEGER", "number where INTEGER is declared")]),
    ({"label": 3}, [("label", "STRING", "integer where STRING is declared")]),
    ({"repeat": "yes"}, [("repeat", "BOOLEAN", "string where BOOLEAN is declared")]),
    ({"volume": "loud"}, [("volume", "NUMBER", "string where NUMBER is declared")]),
    ({"days": "mon"}, [("days", "ARRAY", "string where ARRAY is declared")]),
    ({"days": ["mon", "sun"]}, [("days[1]", "enum", "value outside the enum")]),
    ({"tone": "siren"}, [("tone", "enum", "value outside the enum")]),
    ({"options": {"snooze": "5"}}, [("options.snooze", "INTEGER", "string where INTEGER is declared")]),
    ({"hour": None}, [("hour", "INTEGER", "null where INTEGER is declared")]),
])
def test_type_and_enum_mismatches(arguments, found):
    got = hygiene.call_mismatches(example("wake me", "train", [("set_alarm", arguments)], "a.jsonl line 1"))
    assert [(m["argument"], m["declared"], m["problem"]) for m in got] == found
    assert all(m["function"] == "set_alarm" for m in got)


def test_enum_equality_is_json_equality():
    schema = {"type": "INTEGER", "enum": [1, 2]}
    assert hygiene.value_mismatches(1.0, schema, "x") == []
    assert hygiene.value_mismatches(True, {"enum": [1]}, "x")[0]["problem"] == "value outside the enum"


def test_report_counts_every_planted_problem():
    examples = [
        example("Wake me at 7", "train", [("set_alarm", {"hour": 7})], "a.jsonl line 1"),
        example("Wake me at 7", "train", [("set_alarm", {"hour": 7})], "b.json row index 0"),       # duplicate of 1
        example("wake me at 7", "eval", [("set_alarm", {"hour": 7})], "c.parquet row index 3", "P:other"),  # leak
        example("Alarm at eight", "train", [("set_alarm", {"hour": "8"})], "a.jsonl line 2"),       # type mismatch
        example("Stop it", "eval", [("stop_alarm", {})], "a.jsonl line 3"),                        # only in eval
    ]
    leaks = hygiene.find_leaks(examples)
    assert leaks == {"wake me at 7": {"train": [0, 1], "eval": [2]}}
    metrics, records = hygiene.report(examples, leaks)
    assert {k: metrics[k] for k in ("duplicate_rows", "leaked_requests", "leaked_train_rows", "leaked_eval_rows",
                                    "type_mismatches", "rows_with_type_mismatch", "functions",
                                    "functions_only_in_train", "functions_only_in_eval")} == {
        "duplicate_rows": 1, "leaked_requests": 1, "leaked_train_rows": 2, "leaked_eval_rows": 1,
        "type_mismatches": 1, "rows_with_type_mismatch": 1, "functions": 2,
        "functions_only_in_train": 0, "functions_only_in_eval": 1}
    assert not [k for k in metrics if "alarm" in k]  # no key per function: the table has them
    table = hygiene.function_table(examples)
    assert table == [{"function": "set_alarm", "train_rows": 3, "eval_rows": 1, "train_calls": 3, "eval_calls": 1},
                     {"function": "stop_alarm", "train_rows": 0, "eval_rows": 1, "train_calls": 0, "eval_calls": 1}]
    checks = {r["check"]: r for r in records}
    assert checks["duplicate"]["where"] == "b.json row index 0" and checks["duplicate"]["same_as"] == "a.jsonl line 1"
    assert checks["leak"]["train"] == ["a.jsonl line 1", "b.json row index 0"] and checks["leak"]["eval"] == ["c.parquet row index 3"]
    assert checks["type_mismatch"]["where"] == "a.jsonl line 2" and checks["type_mismatch"]["value"] == "8"
    assert checks["function_only_in_eval"] == {"check": "function_only_in_eval", "function": "stop_alarm", "rows": 1}
    lines = hygiene.summary(metrics, records, "warn", table)
    assert lines[0].startswith("1 exact duplicate row(s); e.g. b.json row index 0 = a.jsonl line 1")
    assert "1 user request(s) in both train and eval (format.on_leak: warn)" in lines[1]
    assert "a.jsonl line 2: set_alarm.hour = '8' (string where INTEGER is declared)" in lines[2]
    assert lines[3] == "0 function(s) only in train; 1 only in eval: stop_alarm"
    assert lines[4] == "rows per function (train/eval): set_alarm 3/1, stop_alarm 0/1"


def test_a_clean_set_reports_zeros():
    examples = [example("a", "train", [("stop_alarm", {})], "x line 1"), example("b", "eval", [("stop_alarm", {})], "x line 2")]
    metrics, records = hygiene.report(examples, hygiene.find_leaks(examples))
    assert records == []
    assert metrics["duplicate_rows"] == metrics["leaked_requests"] == metrics["type_mismatches"] == 0
