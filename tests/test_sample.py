"""Tests of the committed synthetic sample and its generator (data/sample/).

Fast: the generator is standard library only and writes 750 rows in well
under a second. The date checks re-resolve every calendar request with their
own small parser, independent of the generator's code, so a wrong target or an
ambiguous phrasing fails here.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "data" / "sample" / "generate.py"
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"

SIGNATURES = {  # name -> (properties, required), as docs/FORMAT.md lists them
    "turn_on_flashlight": (set(), []),
    "turn_off_flashlight": (set(), []),
    "open_wifi_settings": (set(), []),
    "create_contact": ({"first_name", "last_name", "phone_number", "email"}, ["first_name", "last_name"]),
    "send_email": ({"to", "subject", "body"}, ["to", "subject"]),
    "show_map": ({"query"}, ["query"]),
    "create_calendar_event": ({"title", "datetime"}, ["title", "datetime"]),
}
DEVELOPER = re.compile(
    r"Current date and time given in YYYY-MM-DDTHH:MM:SS format: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\n"
    r"Day of week is (\w+)\n"
    r"You are a model that can do function calling with the following functions\n"
)
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return SAMPLE.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def rows(lines) -> list[dict]:
    return [json.loads(line) for line in lines]


def now_of(row: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(DEVELOPER.fullmatch(row["messages"][0]["content"]).group(1))


def calls_of(row: dict) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in row["messages"][2]["tool_calls"]]


def test_generator_reproduces_committed_file_byte_for_byte(tmp_path):
    out = tmp_path / "sample.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_other_seed_and_sizes(tmp_path):
    out = tmp_path / "small.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), "--seed", "7", "--train", "40", "--eval", "10", "--out", str(out)],
                   check=True, capture_output=True)
    small = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["metadata"] for r in small] == ["train"] * 40 + ["eval"] * 10
    assert small != [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:50]]


def test_row_counts_and_shape(lines, rows):
    assert collections.Counter(r["metadata"] for r in rows) == {"train": 600, "eval": 150}
    for line, row in zip(lines, rows):
        assert line == json.dumps(row)  # same serialization as the real rows
        assert list(row) == ["metadata", "tools", "messages"]
        assert [m["role"] for m in row["messages"]] == ["developer", "user", "assistant"]
        assert list(row["messages"][2]) == ["role", "tool_calls"]
        assert row["messages"][1]["content"].strip() == row["messages"][1]["content"]


def test_tools_are_the_seven_of_the_real_rows(rows, golden_rows):
    real = golden_rows[0]["tools"]

    def canonical(tools):  # order-free view: name -> (description, sorted properties, required)
        return {t["function"]["name"]: (t["function"]["description"], t["function"]["parameters"]["type"],
                                        sorted(t["function"]["parameters"]["properties"].items()),
                                        t["function"]["parameters"].get("required")) for t in tools}

    expected = canonical(real)
    for row in rows:
        assert canonical(row["tools"]) == expected
        for tool in row["tools"]:
            assert list(tool) == ["function"] and list(tool["function"]) == ["name", "description", "parameters"]
            for prop in tool["function"]["parameters"]["properties"].values():
                assert list(prop) == ["type", "description"]


def test_tool_order_and_property_order_vary(rows):
    tool_orders = {tuple(t["function"]["name"] for t in r["tools"]) for r in rows}
    assert len(tool_orders) > 500
    for name, (props, required) in SIGNATURES.items():
        prop_orders = {tuple(t["function"]["parameters"]["properties"]) for r in rows for t in r["tools"]
                       if t["function"]["name"] == name}
        assert len(prop_orders) == (1 if len(props) < 2 else {2: 2, 3: 6, 4: 24}[len(props)]), name
        for r in rows:
            for t in r["tools"]:
                if t["function"]["name"] == name:
                    assert t["function"]["parameters"].get("required", []) == required
                    assert set(t["function"]["parameters"]["properties"]) == props


def test_developer_message_and_day_of_week(rows):
    years = set()
    for row in rows:
        match = DEVELOPER.fullmatch(row["messages"][0]["content"])
        assert match, row["messages"][0]["content"]
        now = dt.datetime.fromisoformat(match.group(1))
        assert match.group(2) == WEEKDAYS[now.weekday()].capitalize()
        years.add(now.year)
    assert years == {2024, 2025, 2026, 2027}


def test_calls_name_declared_tools_with_declared_and_required_arguments(rows):
    for row in rows:
        declared = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        assert row["messages"][2]["tool_calls"]
        for name, args in calls_of(row):
            assert name in declared
            assert set(args) <= set(declared[name]["properties"])
            assert set(declared[name].get("required", [])) <= set(args)
            assert all(isinstance(v, str) and v and v.strip() == v for v in args.values())


def test_arguments_are_copied_from_the_request(rows):
    """Every value but the datetime appears verbatim in the user's text, so eval rows are solvable."""
    for row in rows:
        text = row["messages"][1]["content"]
        for name, args in calls_of(row):
            for key, value in args.items():
                if key != "datetime":
                    assert value in text, (key, value, text)


def test_all_functions_in_both_splits_and_balanced(rows):
    for split in ("train", "eval"):
        counts = collections.Counter(name for r in rows if r["metadata"] == split for name, _ in calls_of(r))
        assert set(counts) == set(SIGNATURES), split
        total = sum(counts.values())
        assert min(counts.values()) >= 0.08 * total, (split, counts)


def test_multi_call_rows(rows):
    for split in ("train", "eval"):
        split_rows = [r for r in rows if r["metadata"] == split]
        multi = [r for r in split_rows if len(calls_of(r)) > 1]
        assert 0.10 <= len(multi) / len(split_rows) <= 0.15, split
        assert len({tuple(n for n, _ in calls_of(r)) for r in multi}) >= 5


def test_optional_arguments_sometimes_present_sometimes_absent(rows):
    seen = collections.defaultdict(set)
    for row in rows:
        for name, args in calls_of(row):
            for optional in SIGNATURES[name][0] - set(SIGNATURES[name][1]):
                seen[(name, optional)].add(optional in args)
    assert seen == {key: {True, False} for key in
                    [("create_contact", "phone_number"), ("create_contact", "email"), ("send_email", "body")]}


def test_requests_are_distinct(rows):
    """No request repeats, so no eval request was seen in training."""
    texts = [r["messages"][1]["content"] for r in rows]
    assert len(set(texts)) == len(texts)


def test_datetimes_are_valid_and_ahead_of_the_rows_current_date(rows):
    for row in rows:
        now = now_of(row)
        for name, args in calls_of(row):
            if name == "create_calendar_event":
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00", args["datetime"])
                when = dt.datetime.fromisoformat(args["datetime"])
                assert when > now and when.date() >= now.date(), (now, args)


# ---------------------------------------------------------------- an independent resolver


def next_weekday(today: dt.date, weekday: int) -> dt.date:
    days = (weekday - today.weekday()) % 7
    return today + dt.timedelta(days=days or 7)


def resolve_date(text: str, today: dt.date) -> dt.date:
    t = text.lower()
    day_names = "|".join(WEEKDAYS)
    month_names = "|".join(MONTHS)
    numbers = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
    if m := re.search(r"\b(\d{4})-(\d\d)-(\d\d)(?!\d)", t):
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    if m := re.search(rf"\b(?:on )?(?:({month_names}) (\d+)(?:st|nd|rd|th)?|(\d+) ({month_names})), (\d{{4}})\b"
                      rf"|\bon (\d+) ({month_names}) (\d{{4}})\b", t):
        if m[6]:
            return dt.date(int(m[8]), MONTHS.index(m[7]) + 1, int(m[6]))
        month, day = (m[1], m[2]) if m[1] else (m[4], m[3])
        return dt.date(int(m[5]), MONTHS.index(month) + 1, int(day))
    if "day after tomorrow" in t:
        return today + dt.timedelta(days=2)
    if "tomorrow" in t:
        return today + dt.timedelta(days=1)
    if "a week from today" in t or "in a week" in t:
        return today + dt.timedelta(days=7)
    if "in two weeks" in t:
        return today + dt.timedelta(days=14)
    if m := re.search(r"\bin (\d+|two|three|four|five|six|seven|eight|nine|ten) days\b", t):
        return today + dt.timedelta(days=int(numbers.get(m[1], m[1])))
    if re.search(r"\b(today|tonight)\b", t):
        return today
    if m := re.search(rf"\b({day_names}) next week\b|\bnext week on ({day_names})\b", t):
        monday = today - dt.timedelta(days=today.weekday())
        return monday + dt.timedelta(days=7 + WEEKDAYS.index(m[1] or m[2]))
    if m := re.search(r"\bthe (\d+)(?:st|nd|rd|th) of next month\b|\bnext month on the (\d+)(?:st|nd|rd|th)\b", t):
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        return dt.date(year, month, int(m[1] or m[2]))
    if m := re.search(rf"\b(?:on )?(?:the (\d+)(?:st|nd|rd|th) of ({month_names})|({month_names}) (\d+)"
                      rf"(?:st|nd|rd|th)?|(?<=on )(\d+) ({month_names}))\b", t):
        month = MONTHS.index(m[2] or m[3] or m[6]) + 1
        day = int(m[1] or m[4] or m[5])
        assert (month, day) != (today.month, today.day), "a bare month-day said on that very day"
        year = today.year if (month, day) > (today.month, today.day) else today.year + 1
        return dt.date(year, month, day)
    if m := re.search(r"\bon the (\d+)(?:st|nd|rd|th)\b", t):
        day = int(m[1])
        assert day != today.day, "'on the Nth' said on the Nth"
        if day > today.day:
            return today.replace(day=day)
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        return dt.date(year, month, day)
    if m := re.search(rf"\b(this coming |this |next |on )?({day_names})\b", t):
        weekday = WEEKDAYS.index(m[2])
        if (m[1] or "").strip() != "next":
            assert weekday != today.weekday(), "'this Friday' said on a Friday"
        return next_weekday(today, weekday)
    raise AssertionError(f"no date found in {text!r}")


def resolve_time(text: str) -> tuple[int, int]:
    t = text.lower()
    if m := re.search(r"\d{4}-\d\d-\d\dt(\d\d):(\d\d):00", t):
        return int(m[1]), int(m[2])
    if re.search(r"\bat (noon|midday|12 noon)\b", t):
        return 12, 0
    if m := re.search(r"\btonight at (\d+)\b", t):
        return int(m[1]) + 12, 0
    clock = r"(\d{1,2})(?::(\d\d))?"
    if m := re.search(rf"\b(morning|afternoon|evening) at {clock}\b", t):
        hour = int(m[2]) % 12 + (0 if m[1] == "morning" else 12)
        return hour, int(m[3] or 0)
    if m := re.search(rf"\bat {clock} ?(am|pm|a\.m\.|p\.m\.)", t):
        return int(m[1]) % 12 + (12 if m[3].startswith("p") else 0), int(m[2] or 0)
    if m := re.search(rf"\bat {clock} (in the morning|in the afternoon|in the evening|at night)\b", t):
        return int(m[1]) % 12 + (0 if m[3] == "in the morning" else 12), int(m[2] or 0)
    if m := re.search(r"\bat (\d{1,2}):(\d\d)\b", t):
        return int(m[1]), int(m[2])
    raise AssertionError(f"no time found in {text!r}")


@pytest.mark.parametrize("text, today, expected", [
    ("Schedule 'X' next Friday at 10:30", dt.date(2026, 1, 16), "2026-01-23T10:30:00"),  # a Friday
    ("Schedule 'X' this Saturday evening at 7", dt.date(2026, 1, 16), "2026-01-17T19:00:00"),
    ("Schedule 'X' on March 5th at noon", dt.date(2026, 3, 6), "2027-03-05T12:00:00"),
    ("Schedule 'X' in 3 days at 9 in the morning", dt.date(2025, 12, 30), "2026-01-02T09:00:00"),
    ("Schedule 'X' 2025-11-26 at 15:00", dt.date(2025, 11, 24), "2025-11-26T15:00:00"),
    ("Schedule 'X' on the 14th at 8:15 am", dt.date(2025, 12, 20), "2026-01-14T08:15:00"),
    ("Schedule 'X' Monday next week at 3pm", dt.date(2026, 1, 18), "2026-01-19T15:00:00"),  # a Sunday
])
def test_resolver_examples(text, today, expected):
    day = resolve_date(text, today)
    hour, minute = resolve_time(text)
    assert f"{day.isoformat()}T{hour:02d}:{minute:02d}:00" == expected


def test_every_one_call_calendar_target_resolves_from_the_text(rows):
    """The datetime follows from the request and the row's own date by the documented rules.

    Only one-call rows: in a two-call row an e-mail body may name other days and times.
    """
    checked = 0
    for row in rows:
        calls = calls_of(row)
        if [name for name, _ in calls] != ["create_calendar_event"]:
            continue
        text = row["messages"][1]["content"]
        text = text.replace(calls[0][1]["title"], "TITLE")  # "1:1 with manager" is not a time
        day = resolve_date(text, now_of(row).date())
        hour, minute = resolve_time(text)
        assert calls[0][1]["datetime"] == f"{day.isoformat()}T{hour:02d}:{minute:02d}:00", row["messages"][1:]
        checked += 1
    assert checked >= 90
