"""The hygiene report on formatted examples: duplicates, leakage, type mismatches, functions per split.

    from pipeline import hygiene
    leaks = hygiene.find_leaks(examples)                     # request -> {"train": [...], "eval": [...]}
    metrics, records = hygiene.report(examples, leaks, dropped_leaked=0)
    table = hygiene.function_table(examples)                 # one record per function: rows and calls per split
    for line in hygiene.summary(metrics, records, "warn", table): log.info(line)

An example is a formatted row (stages/format.py): prompt, completion, tools, target_calls,
split, request, user, function_names, line, where. Pure: no I/O.

- duplicate: an example whose prompt and completion equal an earlier example's (an exact
  duplicate row, whatever shape or file it came from);
- leak: a user request (pipeline.rows.request_key) found in both train and eval;
- type mismatch: an argument value whose JSON type contradicts its declared type (a string
  where INTEGER is declared; an integer-valued number is an INTEGER), or outside the declared
  enum, at any depth the schema describes (array items, object properties);
- functions only in train / only in eval, and rows per function per split.

`metrics` has flat, stable keys (counts) whose number does not grow with the data; `records` lists
every finding, one JSON object each (for data/formatted/hygiene.jsonl); the per-function counts are a
table of their own (`function_table`, metrics/format_per_function.json), since a tool set can have
thousands of functions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from pipeline import functiongemma as fg
from pipeline.rows import kind

SPLITS = ("train", "eval")
MAX_WHERE = 10  # places listed per leaked request in a record
NO_CALL = "(no call)"


def find_leaks(examples: list[dict]) -> dict[str, dict[str, list[int]]]:
    """Requests found in both splits -> the example indexes in each split."""
    places: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"train": [], "eval": []})
    for i, ex in enumerate(examples):
        places[ex["request"]][ex["split"]].append(i)
    return {request: p for request, p in places.items() if p["train"] and p["eval"]}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


_TYPE_FITS = {
    "STRING": lambda v: isinstance(v, str),
    "INTEGER": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "NUMBER": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "ARRAY": lambda v: isinstance(v, list),
    "OBJECT": lambda v: isinstance(v, dict),
    "NULL": lambda v: v is None,
}


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


def value_mismatches(value: Any, schema: Any, path: str) -> list[dict]:
    """Every place where a value contradicts its schema's type or enum."""
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type").upper() if isinstance(schema.get("type"), str) else None
    fits = _TYPE_FITS.get(declared)
    if fits is not None and not fits(value):
        return [{"argument": path, "declared": declared, "value": _short(value),
                 "problem": f"{kind(value)} where {declared} is declared"}]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and not any(_same(value, e) for e in enum):
        return [{"argument": path, "declared": "enum", "value": _short(value), "problem": "value outside the enum"}]
    found = []
    items, props = schema.get("items"), schema.get("properties")
    if isinstance(value, list) and isinstance(items, dict):
        for i, item in enumerate(value):
            found += value_mismatches(item, items, f"{path}[{i}]")
    if isinstance(value, dict) and isinstance(props, dict):
        for key, item in value.items():
            if key in props:
                found += value_mismatches(item, props[key], f"{path}.{key}")
    return found


def call_mismatches(example: dict) -> list[dict]:
    """Type and enum mismatches of an example's target calls against its declared tools."""
    declared = {}
    for tool in example["tools"]:
        spec = fg.unwrap_tool(tool)
        declared[spec["name"]] = spec.get("parameters") or {}
    found = []
    for call in example["target_calls"]:
        props = declared.get(call["name"], {}).get("properties") or {}
        for key, value in call["arguments"].items():
            for m in value_mismatches(value, props.get(key), key):
                found.append({"function": call["name"], **m})
    return found


def report(examples: list[dict], leaks: dict[str, dict[str, list[int]]], dropped_leaked: int = 0,
           leak_examples: list[dict] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """(flat metrics, finding records) for the examples that will be written.

    `leaks` and `leak_examples` (the examples the leak indexes point into, before any were
    dropped; default `examples`) describe the leakage found; `dropped_leaked` counts the train
    rows dropped for it.
    """
    leak_examples = examples if leak_examples is None else leak_examples
    records: list[dict] = []
    first_seen: dict[tuple[str, str], dict] = {}
    duplicates = 0
    for ex in examples:
        key = (ex["prompt"], ex["completion"])
        if key in first_seen:
            duplicates += 1
            first = first_seen[key]
            records.append({"check": "duplicate", "where": ex["where"], "line": ex["line"], "split": ex["split"],
                            "same_as": first["where"], "same_as_line": first["line"]})
        else:
            first_seen[key] = ex
    for request, places in leaks.items():
        first = leak_examples[(places["train"] + places["eval"])[0]]
        records.append({"check": "leak", "request": first["user"], "train_rows": len(places["train"]),
                        "eval_rows": len(places["eval"]),
                        "train": [leak_examples[i]["where"] for i in places["train"][:MAX_WHERE]],
                        "eval": [leak_examples[i]["where"] for i in places["eval"][:MAX_WHERE]]})
    mismatched_rows = 0
    mismatches = 0
    for ex in examples:
        found = call_mismatches(ex)
        mismatched_rows += bool(found)
        mismatches += len(found)
        records.extend({"check": "type_mismatch", "where": ex["where"], "line": ex["line"], "split": ex["split"], **m}
                       for m in found)
    rows_per_function = {split: Counter() for split in SPLITS}
    for ex in examples:
        for name in dict.fromkeys(ex["function_names"] or [NO_CALL]):
            rows_per_function[ex["split"]][name] += 1
    train_only = sorted(set(rows_per_function["train"]) - set(rows_per_function["eval"]))
    eval_only = sorted(set(rows_per_function["eval"]) - set(rows_per_function["train"]))
    records += [{"check": "function_only_in_train", "function": n, "rows": rows_per_function["train"][n]} for n in train_only]
    records += [{"check": "function_only_in_eval", "function": n, "rows": rows_per_function["eval"][n]} for n in eval_only]
    metrics: dict[str, Any] = {
        "duplicate_rows": duplicates,
        "leaked_requests": len(leaks),
        "leaked_train_rows": sum(len(p["train"]) for p in leaks.values()),
        "leaked_eval_rows": sum(len(p["eval"]) for p in leaks.values()),
        "train_rows_dropped_leaked": dropped_leaked,
        "type_mismatches": mismatches,
        "rows_with_type_mismatch": mismatched_rows,
        "functions": len((set(rows_per_function["train"]) | set(rows_per_function["eval"])) - {NO_CALL}),
        "functions_only_in_train": len(set(train_only) - {NO_CALL}),
        "functions_only_in_eval": len(set(eval_only) - {NO_CALL}),
    }
    return metrics, records


def function_table(examples: list[dict]) -> list[dict[str, Any]]:
    """One record per called function, sorted by name: `train_rows` / `eval_rows` (rows calling it at least
    once) and `train_calls` / `eval_calls` (its calls, a row calling it twice counts twice); the same for any
    other split the examples have (such as `validation`)."""
    rows: dict[str, Counter] = defaultdict(Counter)
    calls: dict[str, Counter] = defaultdict(Counter)
    for ex in examples:
        for name in ex["function_names"]:
            calls[name][ex["split"]] += 1
        for name in dict.fromkeys(ex["function_names"]):
            rows[name][ex["split"]] += 1
    splits = [*SPLITS, *sorted({ex["split"] for ex in examples} - set(SPLITS))]
    return [{"function": name, **{f"{split}_rows": rows[name][split] for split in splits},
             **{f"{split}_calls": calls[name][split] for split in splits}} for name in sorted(rows)]


def summary(metrics: dict[str, Any], records: list[dict], on_leak: str, functions: list[dict] | None = None,
            shown: int = 5) -> list[str]:
    """The report as a few readable log lines (every finding is in the records)."""
    def examples_of(check: str, render) -> str:
        found = [render(r) for r in records if r["check"] == check][:shown]
        return ("; e.g. " + "; ".join(found)) if found else ""

    lines = [
        f"{metrics['duplicate_rows']} exact duplicate row(s)"
        + examples_of("duplicate", lambda r: f"{r['where']} = {r['same_as']}"),
        f"{metrics['leaked_requests']} user request(s) in both train and eval (format.on_leak: {on_leak}"
        + (f", {metrics['train_rows_dropped_leaked']} train row(s) dropped" if metrics["train_rows_dropped_leaked"] else "")
        + ")" + examples_of("leak", lambda r: f"{r['request'][:60]!r} ({r['train'][0]} / {r['eval'][0]})"),
        f"{metrics['type_mismatches']} argument value(s) contradict their declared type or enum, in "
        f"{metrics['rows_with_type_mismatch']} row(s)"
        + examples_of("type_mismatch", lambda r: f"{r['where']}: {r['function']}.{r['argument']} = {r['value']!r} "
                                                 f"({r['problem']})"),
    ]
    train_only = [r["function"] for r in records if r["check"] == "function_only_in_train"]
    eval_only = [r["function"] for r in records if r["check"] == "function_only_in_eval"]
    lines.append(f"{len(train_only)} function(s) only in train{': ' + ', '.join(train_only[:20]) if train_only else ''}; "
                 f"{len(eval_only)} only in eval{': ' + ', '.join(eval_only[:20]) if eval_only else ''}")
    if functions:
        table = ", ".join(f"{r['function']} {r['train_rows']}/{r['eval_rows']}" for r in functions[:30])
        more = f" (and {len(functions) - 30} more)" if len(functions) > 30 else ""
        lines.append(f"rows per function (train/eval): {table}{more}")
    return lines
