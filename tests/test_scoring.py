"""Unit and property tests for pipeline/scoring.py (pure: no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import functiongemma as fg
from pipeline import scoring
from pipeline.scoring import NO_CALL, normalize_value, score_row, summarize


EMAIL = {"name": "send_email", "arguments": {"to": "ana@x.org", "subject": "Lunch", "body": "At noon?"}}
EVENT = {"name": "create_calendar_event", "arguments": {"title": "Standup", "datetime": "2026-01-20T15:00:00"}}
LIGHT = {"name": "turn_on_flashlight", "arguments": {}}


def out(*calls: dict) -> str:
    """Generated text for these calls, as a well-behaved model writes it."""
    return "".join(fg.render_call(fg.Call(c["name"], c["arguments"])) for c in calls) + fg.START_RESPONSE


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


# ---------------------------------------------------------------- exact match (FORMAT.md)


def test_identical_calls_are_an_exact_match():
    row = score_row([EVENT, EMAIL], out(EVENT, EMAIL))
    assert row.exact and row.normalized and row.names_match and not row.malformed
    assert (row.true_triples, row.predicted_triples, row.target_triples) == (5, 5, 5)


def test_call_order_matters():
    row = score_row([EVENT, EMAIL], out(EMAIL, EVENT))
    assert not row.exact and not row.names_match
    assert row.true_triples == 5  # the triples are all there, only the order is wrong


def test_missing_extra_or_wrong_call_is_wrong():
    assert not score_row([EVENT, EMAIL], out(EVENT)).exact
    assert not score_row([EVENT], out(EVENT, EMAIL)).exact
    assert not score_row([LIGHT], out(call("turn_off_flashlight"))).exact


def test_one_wrong_or_missing_argument_is_wrong():
    assert not score_row([EMAIL], out(call("send_email", to="ana@x.org", subject="Lunch", body="At noon"))).exact
    assert not score_row([EMAIL], out(call("send_email", to="ana@x.org", subject="Lunch"))).exact
    assert not score_row([EMAIL], out(call("send_email", **EMAIL["arguments"], cc="bo@x.org"))).exact


def test_arguments_compare_as_strings():
    # The model may write a number bare; the target holds the string. FORMAT.md compares dicts of strings.
    target = [call("create_contact", first_name="Mei", last_name="Li", phone_number="7805555637")]
    text = "<start_function_call>call:create_contact{first_name:<escape>Mei<escape>,last_name:<escape>Li<escape>," \
           "phone_number:7805555637}<end_function_call><start_function_response>"
    assert score_row(target, text).exact


def test_no_call_expected_and_none_made_is_correct():
    row = score_row([], "I can't do that on this phone.<end_of_turn>")
    assert row.exact and row.names_match


def test_text_instead_of_a_call_is_wrong():
    row = score_row([LIGHT], "Sure, turning it on!<end_of_turn>")
    assert not row.exact and row.predicted == ()


# ---------------------------------------------------------------- exact match in any order (parallel calls)


def test_parallel_calls_in_another_order_match_any_order_but_not_exactly():
    row = score_row([EVENT, EMAIL], out(EMAIL, EVENT))
    assert row.exact_any_order and not row.exact
    assert score_row([EVENT, EMAIL], out(EVENT, EMAIL)).exact_any_order  # in order is in any order too


@pytest.mark.parametrize("target, output", [
    ([LIGHT, LIGHT], out(LIGHT)),  # a multiset: one call is not two
    ([LIGHT], out(LIGHT, LIGHT)),
    ([EVENT, EMAIL], out(EMAIL)),
    ([EMAIL], out(call("send_email", to="ana@x.org", subject="Lunch", body="At noon"))),  # a wrong value
    ([EVENT, EMAIL], out(call("send_email", **EVENT["arguments"]), call("create_calendar_event", **EMAIL["arguments"]))),
])
def test_any_order_still_needs_the_same_calls_with_the_same_arguments(target, output):
    assert not score_row(target, output).exact_any_order


def test_any_order_compares_arguments_as_strings_and_never_matches_malformed_output():
    target = [call("create_contact", first_name="Mei", last_name="Li", phone_number="7805555637"), LIGHT]
    text = fg.render_call(fg.Call("turn_on_flashlight", {})) + \
        "<start_function_call>call:create_contact{first_name:<escape>Mei<escape>,last_name:<escape>Li<escape>," \
        "phone_number:7805555637}<end_function_call><start_function_response>"
    assert score_row(target, text).exact_any_order
    broken = out(EMAIL, EVENT).removesuffix(fg.START_RESPONSE) + "<start_function_call>call:x{a:<escape>b"
    row = score_row([EVENT, EMAIL], broken)
    assert row.malformed and not row.exact_any_order


# ---------------------------------------------------------------- no-call accuracy


def test_no_call_accuracy_is_over_rows_that_expect_no_call():
    rows = [
        score_row([], "I can't do that.<end_of_turn>"),  # right: no call
        score_row([], "nothing"),  # right
        score_row([], out(LIGHT)),  # wrong: a call
        score_row([], "<start_function_call>call:turn_on_flashlight{a:<escape>b"),  # wrong: malformed
        score_row([LIGHT], "Done!<end_of_turn>"),  # expects a call: not counted
        score_row([EVENT], out(EVENT)),  # not counted
    ]
    assert scoring.accuracy_hits(rows, "no_call_accuracy") == [True, True, False, False]
    metrics = summarize(rows)
    assert metrics["rows_expecting_none"] == 4 and metrics["no_call_accuracy"] == 0.5
    assert metrics["spurious_call_rate"] == 0.25  # the call; the malformed row made none


def test_data_without_no_call_rows_has_no_call_accuracy_over_zero_rows():
    rows = [score_row([LIGHT], out(LIGHT)), score_row([EVENT], "x")]
    assert scoring.accuracy_hits(rows, "no_call_accuracy") == []
    metrics = summarize(rows)
    assert metrics["rows_expecting_none"] == 0 and metrics["no_call_accuracy"] == 0.0


def test_accuracy_hits_cover_every_accuracy_and_agree_with_summarize():
    rows = [score_row([EVENT, EMAIL], out(EMAIL, EVENT)), score_row([LIGHT], out(LIGHT)), score_row([], "no"),
            score_row([EMAIL], out(call("send_email", to="ANA@x.org", subject="Lunch", body="At noon?")))]
    metrics = summarize(rows)
    expected = {"exact_match": [False, True, True, False], "exact_match_any_order": [True, True, True, False],
                "normalized_match": [False, True, True, True], "function_name_accuracy": [False, True, True, True],
                "no_call_accuracy": [True]}
    assert {name: scoring.accuracy_hits(rows, name) for name in scoring.ACCURACIES} == expected
    for name, hits in expected.items():
        assert metrics[name] == pytest.approx(sum(hits) / len(hits)), name
    with pytest.raises(ValueError, match="unknown accuracy 'argument_f1'"):
        scoring.accuracy_hits(rows, "argument_f1")


def test_output_without_stop_token_still_parses():
    assert score_row([EVENT], out(EVENT).removesuffix(fg.START_RESPONSE)).exact


@pytest.mark.parametrize("garbage", [
    "<start_function_call>call:send_email{to:<escape>ana@x.org<escape>,subject:<escape>Lun",  # truncated
    "<start_function_call>call:show_map{query:<escape>Paris}<end_function_call>",  # unbalanced <escape>
    "<start_function_call>call:show_map{query:<escape>Paris<escape>}<end_function_call>and then<escape>",  # junk after
    "<start_function_call>call:{}<end_function_call>",  # no name
])
def test_garbage_is_wrong_and_counted_as_unparseable(garbage):
    row = score_row([call("show_map", query="Paris")], garbage)
    assert not row.exact and not row.normalized and row.malformed and row.error
    metrics = summarize([row])
    assert metrics["unparseable_rate"] == 1.0 and metrics["exact_match"] == 0.0


def test_a_malformed_output_is_never_an_exact_match_even_with_the_right_calls():
    text = out(EVENT).removesuffix(fg.START_RESPONSE) + "<start_function_call>call:x{a:<escape>b"
    row = score_row([EVENT], text)
    assert row.predicted_names == ["create_calendar_event"] and row.malformed and not row.exact


# ---------------------------------------------------------------- normalized match


@pytest.mark.parametrize("a, b", [
    ("Meeting with Mr. Dubois", "meeting with mr. dubois"),
    ("  Lisbon ", "Lisbon"),
    ("Lisbon.", "Lisbon"),
    ("'Q4 Review'", "Q4 Review"),
    ("Q4   Review", "Q4 Review"),
    ("2026-01-20T15:00:00", "2026-01-20 15:00"),
    ("2026-01-20T15:00:00", "2026-01-20t15:00:00.000"),
    ("2026-01-20T09:05:00", "2026-1-20T9:05"),
])
def test_normalize_value_equates_spellings(a, b):
    assert normalize_value(a) == normalize_value(b)


@pytest.mark.parametrize("a, b", [
    ("Lisbon", "Lisboa"),
    ("2026-01-20T15:00:00", "2026-01-20T15:30:00"),
    ("2026-01-20T15:00:00", "2026-01-21T15:00:00"),
    ("Q4 Review", "Q4Review"),
])
def test_normalize_value_keeps_real_differences(a, b):
    assert normalize_value(a) != normalize_value(b)


def test_normalized_match_is_reported_beside_exact():
    predicted = call("create_calendar_event", title="standup ", datetime="2026-01-20 15:00")
    row = score_row([EVENT], out(predicted))
    assert row.normalized and not row.exact
    metrics = summarize([row])
    assert metrics["exact_match"] == 0.0 and metrics["normalized_match"] == 1.0


# ---------------------------------------------------------------- aggregates


def test_argument_precision_recall_f1_over_triples():
    rows = [
        score_row([EMAIL], out(call("send_email", to="ana@x.org", subject="Lunch"))),  # 2 right, 1 missed
        score_row([EVENT], out(call("create_calendar_event", title="Standup", datetime="2026-01-21T15:00:00"))),  # 1 right, 1 wrong
        score_row([LIGHT], out(LIGHT)),  # no triples at all
    ]
    metrics = summarize(rows)
    assert metrics["argument_precision"] == pytest.approx(3 / 4)
    assert metrics["argument_recall"] == pytest.approx(3 / 5)
    assert metrics["argument_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert metrics["function_name_accuracy"] == 1.0
    assert metrics["exact_match"] == pytest.approx(1 / 3)


def test_call_rates_have_their_own_denominators():
    rows = [
        score_row([LIGHT], "Done!<end_of_turn>"),  # missed
        score_row([EVENT], out(EVENT)),  # fine
        score_row([], out(LIGHT)),  # spurious
        score_row([], "No can do.<end_of_turn>"),  # fine
        score_row([], "nothing"),  # fine
    ]
    metrics = summarize(rows)
    assert metrics["rows"] == 5 and metrics["rows_expecting_none"] == 3
    assert metrics["missed_call_rate"] == pytest.approx(1 / 2)
    assert metrics["spurious_call_rate"] == pytest.approx(1 / 3)
    assert metrics["exact_match"] == pytest.approx(3 / 5)


def test_summarize_of_nothing_is_zeros_not_an_error():
    metrics = summarize([])
    assert metrics["rows"] == 0 and metrics["exact_match"] == 0.0 and metrics["argument_f1"] == 0.0


def test_per_function_table():
    targets = [[EVENT, EMAIL], [EMAIL], [LIGHT], []]
    finetuned = [score_row(t, o) for t, o in zip(targets, [out(EVENT, EMAIL), "x", out(LIGHT), "none"])]
    base = [score_row(t, "x") for t in targets]
    table = scoring.per_function({"finetuned": finetuned, "base": base})
    by_name = {r["function"]: r for r in table}
    assert [r["function"] for r in table] == sorted(by_name)
    assert by_name["send_email"] == {"function": "send_email", "rows": 2, "rows_finetuned": 2, "rows_base": 2,
                                     "exact_match_finetuned": 0.5, "exact_match_base": 0.0}
    assert by_name["create_calendar_event"]["exact_match_finetuned"] == 1.0
    assert by_name["turn_on_flashlight"]["exact_match_finetuned"] == 1.0
    assert by_name[NO_CALL] == {"function": NO_CALL, "rows": 1, "rows_finetuned": 1, "rows_base": 1,
                                "exact_match_finetuned": 1.0, "exact_match_base": 1.0}
    subset = scoring.per_function({"finetuned": finetuned, "base": base[:1]})  # the base model scored one row
    assert {r["function"]: (r["rows"], r["rows_base"]) for r in subset}["send_email"] == (2, 1)


def test_confusion_aligns_calls_and_fills_the_gaps():
    rows = [
        score_row([EVENT, EMAIL], out(EVENT)),
        score_row([LIGHT], out(call("turn_off_flashlight"))),
        score_row([], out(LIGHT)),
        score_row([], "no"),
    ]
    assert scoring.confusion_pairs(rows) == [
        ("create_calendar_event", "create_calendar_event"),
        ("send_email", NO_CALL),
        ("turn_on_flashlight", "turn_off_flashlight"),
        (NO_CALL, "turn_on_flashlight"),
        (NO_CALL, NO_CALL),
    ]
    table = scoring.confusion_table(rows)
    assert table[NO_CALL] == {NO_CALL: 1, "turn_on_flashlight": 1}
    text = scoring.format_confusion(table)
    assert "turn_off_flashlight" in text and text.count("\n") == len(table)


def test_the_real_completions_score_as_exact_matches(golden_case):
    row, expected = golden_case
    target = fg.calls_from_message(row["messages"][-1])
    assert target and score_row(target, expected["completion"]).exact, expected["completion"]


# ---------------------------------------------------------------- property: never crashes

PIECES = [fg.START_CALL, fg.END_CALL, fg.ESCAPE, fg.START_RESPONSE, fg.END_OF_TURN, fg.EOS, "call:", "send_email",
          "{", "}", "[", "]", ":", ",", "to", "1.5e9", "true", "null", "-", "ü", "\n", " "]
garbage = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=garbage)
def test_scoring_never_crashes_on_random_text(text):
    targets = [[], [LIGHT], [EVENT, EMAIL]]
    rows = [score_row(t, text) for t in targets]
    for row in rows:
        assert isinstance(row.exact, bool) and isinstance(row.malformed, bool)
        assert row.normalized or not row.exact  # normalizing never loses a match
        assert row.exact_any_order or not row.exact  # in order is in any order too
        assert row.true_triples <= min(row.predicted_triples, row.target_triples)
    metrics = summarize(rows)
    for key, value in metrics.items():
        if key not in ("rows", "rows_expecting_none"):
            assert 0.0 <= value <= 1.0, key
    scoring.format_confusion(scoring.confusion_table(rows))


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=3)))
def test_normalize_value_never_crashes_and_is_idempotent(value):
    once = normalize_value(value)
    assert normalize_value(once) == once
