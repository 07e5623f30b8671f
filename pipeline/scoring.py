"""Scoring of generated function calls against target calls (pure: no I/O, no model).

    from pipeline.scoring import score_row, summarize
    row = score_row(target_calls, generated_text)   # RowScore: exact, normalized, ...
    metrics = summarize([row, ...])                  # {"exact_match": 0.8, ...}
    hits = accuracy_hits([row, ...], "no_call_accuracy")  # the verdicts behind one accuracy (for intervals)

The headline number is `exact_match`, the reference metric of FORMAT.md (the one
published for Mobile Actions): the called function names equal the target names
in order, and each call's arguments equal the target's as a dict of strings; no
call in the target and none in the output is also correct. Output the parser
flags as malformed (a truncated call, an unbalanced `<escape>`, stray function
tokens, text after the calls) is never an exact match: an app cannot act on it.

Finer metrics are reported beside it, never instead of it:
- `exact_match_any_order`: the calls compared as a multiset of (name, arguments as strings), so parallel
  calls in another order still match (the rule the Berkeley Function Calling Leaderboard uses for
  parallel calls); malformed output never matches; never lower than exact_match;
- `no_call_accuracy`: over rows whose target has no call, the share whose output has no call and is not
  malformed (0 with `rows_expecting_none` = 0 when the data has no such rows);
- `function_name_accuracy`: the called names equal the target names, in order;
- `argument_precision` / `argument_recall` / `argument_f1`: over
  (function, key, value) triples, counted as multisets over all rows (micro);
- `normalized_match`: exact match after normalizing values (case, Unicode form,
  inner and surrounding whitespace, surrounding punctuation, date-time spellings
  such as `2024-10-20 14:27` = `2024-10-20T14:27:00`); never lower than exact_match;
- `missed_call_rate` (no call where one was expected, over rows expecting a call),
  `spurious_call_rate` (a call where none was expected, over rows expecting none;
  0 when there are no such rows, see `rows_expecting_none`), `unparseable_rate`
  (output the parser flagged as malformed, over all rows).

The accuracies (ACCURACIES) are shares of rows, each over its own rows (`accuracy_hits`): the eval
stage gives each its row count and a 95% interval. Argument precision/recall/F1 count triples, and the
rates count errors; neither is a share of rows answered right.

Scoring never raises on model output: any text is scored, at worst as wrong.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Iterable

from pipeline import functiongemma as fg

NO_CALL = "(no call)"  # the confusion table's and per-function table's name for "no function"
# Shares of rows answered right, each with the rows it is over (accuracy_hits); exact_match is the headline.
ACCURACIES = ("exact_match", "exact_match_any_order", "normalized_match", "function_name_accuracy", "no_call_accuracy")

_DATETIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[t ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?")
_STRIP = string.punctuation + string.whitespace


@dataclass(frozen=True)
class RowScore:
    """How one generated output compares with its target calls."""

    target: tuple[fg.Call, ...]
    predicted: tuple[fg.Call, ...]
    malformed: bool  # the parser could not read all of the output
    error: str  # the parser's short reason when malformed
    exact: bool  # FORMAT.md's reference metric
    exact_any_order: bool  # the same calls as a multiset (parallel calls in any order), not malformed
    normalized: bool  # exact after value normalization
    names_match: bool  # the called names equal the target names, in order
    true_triples: int  # (function, key, value) triples both in target and output (multiset)
    predicted_triples: int
    target_triples: int

    @property
    def target_names(self) -> list[str]:
        return [c.name for c in self.target]

    @property
    def predicted_names(self) -> list[str]:
        return [c.name for c in self.predicted]


def as_string(value: Any) -> str:
    """A value as the string it stands for: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def normalize_value(value: Any) -> str:
    """Case-, whitespace- and punctuation-insensitive form of a value; date-times in one spelling."""
    text = unicodedata.normalize("NFKC", as_string(value)).casefold()
    text = " ".join(text.split()).strip(_STRIP)
    match = _DATETIME.fullmatch(text)
    if match:
        year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return text


def _string_args(call: fg.Call) -> dict[str, str]:
    return {str(k): as_string(v) for k, v in call.arguments.items()}


def _normalized_args(call: fg.Call) -> dict[str, str]:
    return {str(k): normalize_value(v) for k, v in call.arguments.items()}


def _call_key(call: fg.Call) -> tuple[str, tuple[tuple[str, str], ...]]:
    return call.name, tuple(sorted(_string_args(call).items()))


def _triples(calls: Iterable[fg.Call]) -> Counter:
    return Counter((c.name, str(k), as_string(v)) for c in calls for k, v in c.arguments.items())


def to_calls(raw: Iterable[Any]) -> tuple[fg.Call, ...]:
    """Target calls as formatted rows store them ({"name", "arguments"}) or as Calls."""
    calls = []
    for item in raw:
        if isinstance(item, fg.Call):
            calls.append(item)
        else:
            calls.append(fg.Call(item["name"], dict(item.get("arguments") or {})))
    return tuple(calls)


def score_calls(target: Iterable[Any], predicted: Iterable[fg.Call], malformed: bool = False, error: str = "") -> RowScore:
    """Compare parsed calls with the target calls."""
    target, predicted = to_calls(target), tuple(predicted)
    names_match = [c.name for c in target] == [c.name for c in predicted]
    same_args = names_match and all(_string_args(t) == _string_args(p) for t, p in zip(target, predicted))
    same_normalized = names_match and all(_normalized_args(t) == _normalized_args(p) for t, p in zip(target, predicted))
    same_multiset = Counter(map(_call_key, target)) == Counter(map(_call_key, predicted))
    want, got = _triples(target), _triples(predicted)
    return RowScore(
        target=target,
        predicted=predicted,
        malformed=malformed,
        error=error,
        exact=same_args and not malformed,
        exact_any_order=same_multiset and not malformed,
        normalized=same_normalized and not malformed,
        names_match=names_match,
        true_triples=sum((want & got).values()),
        predicted_triples=sum(got.values()),
        target_triples=sum(want.values()),
    )


def score_row(target: Iterable[Any], output: str) -> RowScore:
    """Parse generated text and compare it with the target calls. Never raises on any text."""
    parsed = fg.parse_output(output)
    return score_calls(target, parsed.calls, parsed.malformed, parsed.error)


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def accuracy_hits(rows: list[RowScore], name: str) -> list[bool]:
    """The per-row verdicts behind accuracy `name` (one of ACCURACIES), over the rows it counts:
    every row, or for no_call_accuracy the rows whose target has no call."""
    if name == "exact_match":
        return [r.exact for r in rows]
    if name == "exact_match_any_order":
        return [r.exact_any_order for r in rows]
    if name == "normalized_match":
        return [r.normalized for r in rows]
    if name == "function_name_accuracy":
        return [r.names_match for r in rows]
    if name == "no_call_accuracy":
        return [not r.predicted and not r.malformed for r in rows if not r.target]
    raise ValueError(f"unknown accuracy {name!r}: one of {', '.join(ACCURACIES)}")


def summarize(rows: list[RowScore]) -> dict[str, float | int]:
    """Aggregate metrics over rows (flat keys, fractions in [0, 1])."""
    n = len(rows)
    expecting = [r for r in rows if r.target]
    expecting_none = [r for r in rows if not r.target]
    true = sum(r.true_triples for r in rows)
    predicted = sum(r.predicted_triples for r in rows)
    target = sum(r.target_triples for r in rows)
    precision, recall = _rate(true, predicted), _rate(true, target)
    return {
        "rows": n,
        "rows_expecting_none": len(expecting_none),
        **{name: _rate(sum(hits), len(hits)) for name in ACCURACIES for hits in [accuracy_hits(rows, name)]},
        "argument_precision": precision,
        "argument_recall": recall,
        "argument_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "missed_call_rate": _rate(sum(not r.predicted for r in expecting), len(expecting)),
        "spurious_call_rate": _rate(sum(bool(r.predicted) for r in expecting_none), len(expecting_none)),
        "unparseable_rate": _rate(sum(r.malformed for r in rows), n),
    }


def per_function(rows_by_model: dict[str, list[RowScore]]) -> list[dict[str, Any]]:
    """Exact match per target function, one record per function (a table DVC can plot).

    A row counts for every distinct function among its targets; rows with no
    target call count under NO_CALL. Records are sorted by function name and
    carry `rows_<model>` and `exact_match_<model>` for every model given, and
    `rows` (the first model's count).
    """
    names = sorted({name for rows in rows_by_model.values() for r in rows for name in (set(r.target_names) or {NO_CALL})})
    table = []
    for name in names:
        record: dict[str, Any] = {"function": name}
        for model, rows in rows_by_model.items():
            hits = [r.exact for r in rows if name in (set(r.target_names) or {NO_CALL})]
            record.setdefault("rows", len(hits))  # the first model's (models may score different subsets)
            record[f"rows_{model}"] = len(hits)
            record[f"exact_match_{model}"] = _rate(sum(hits), len(hits))
        table.append(record)
    return table


def confusion_pairs(rows: list[RowScore]) -> list[tuple[str, str]]:
    """(expected, called) function names, aligned call by call; NO_CALL fills the shorter side."""
    pairs = []
    for r in rows:
        aligned = list(zip_longest(r.target_names, r.predicted_names, fillvalue=NO_CALL))
        pairs.extend(aligned or [(NO_CALL, NO_CALL)])
    return pairs


def confusion_table(rows: list[RowScore]) -> dict[str, dict[str, int]]:
    """{expected: {called: count}} from `confusion_pairs`."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for expected, called in confusion_pairs(rows):
        table[expected][called] = table[expected].get(called, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}


def format_confusion(table: dict[str, dict[str, int]]) -> str:
    """The confusion table as aligned text (rows: expected, columns: called; names cut at 24 characters)."""
    if not table:
        return "(no rows)"
    called = sorted({c for row in table.values() for c in row})
    corner = "expected \\ called"
    first = max(len(n[:24]) for n in [*table, corner])
    widths = [max(len(c[:24]), *(len(str(row.get(c, 0))) for row in table.values())) for c in called]
    lines = [corner.ljust(first) + "".join(f"  {c[:24]:>{w}}" for c, w in zip(called, widths))]
    for expected, row in table.items():
        lines.append(expected[:24].ljust(first) + "".join(f"  {row.get(c, 0):>{w}}" for c, w in zip(called, widths)))
    return "\n".join(lines)
