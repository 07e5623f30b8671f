"""format stage: rows (Mobile Actions schema) -> FunctionGemma prompt/completion text.

    dvc repro format
    python -m stages.format --params params.yaml --raw data/raw/dataset.jsonl \
        --tokenizer models/base --out-dir data/formatted --metrics metrics/format.json
    python -m stages.format --preview ROWS.jsonl      # no model or tokenizer needed

Reads `format.*`. Writes `data/formatted/train.jsonl` and `eval.jsonl` (one
example per line: prompt, completion, tools, messages, target_calls, split, user,
function_names, line), `data/formatted/rejected.jsonl` (line number and reasons
of every row that was dropped) and `metrics/format.json` (counts per split and
per function, token-length statistics, rows over max_length, rejected rows).

The split is each row's `metadata` ("train" or "eval"). The text itself comes
from `pipeline.functiongemma`, the one owner of the format.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from pipeline import functiongemma as fg
from pipeline.common import UserError, read_jsonl, run_main, write_json, write_jsonl
from pipeline.params import FormatParams, load_params

log = logging.getLogger("format")

SPLITS = ("train", "eval")
MAX_ERRORS_SHOWN = 20


# ---------------------------------------------------------------- pure


def validate_row(row: dict) -> list[str]:
    """Every reason this row cannot become a training example (empty list: it can)."""
    errors: list[str] = []
    if row.get("metadata") not in SPLITS:
        errors.append(f"metadata must be 'train' or 'eval', got {row.get('metadata')!r}")
    tools = row.get("tools")
    declared: dict[str, dict] = {}
    if not isinstance(tools, list):
        errors.append("missing 'tools' list")
    else:
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                errors.append(f"tools[{i}] is not an object")
                continue
            spec = fg.unwrap_tool(tool)
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str) or not name:
                errors.append(f"tools[{i}] has no function name")
                continue
            declared[name] = spec.get("parameters") or {}
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        errors.append("missing 'messages' list")
        return errors
    if any(not isinstance(m, dict) or "role" not in m for m in messages):
        errors.append("every message needs a 'role'")
        return errors
    last = messages[-1]
    if last.get("role") not in ("assistant", "model"):
        errors.append(f"the last message must be the assistant's answer, got role {last.get('role')!r}")
        return errors
    if not any(m.get("role") == "user" for m in messages):
        errors.append("no user message")
    try:
        calls = fg.calls_from_message(last)
    except (ValueError, TypeError, KeyError) as err:
        errors.append(f"unreadable tool_calls: {err}")
        return errors
    if not calls and not (last.get("content") or "").strip():
        errors.append("the assistant message has neither tool_calls nor content")
    if isinstance(tools, list):
        for call in calls:
            errors.extend(_check_call(call, declared))
    if not errors:
        try:
            fg.render_row(row)
        except (ValueError, TypeError, KeyError) as err:
            errors.append(f"cannot be rendered: {err}")
    return errors


def _check_call(call: fg.Call, declared: dict[str, dict]) -> list[str]:
    if call.name not in declared:
        return [f"calls undeclared tool {call.name!r}"]
    params = declared[call.name]
    properties = params.get("properties") or {}
    errors = [f"{call.name}: argument {key!r} is not declared by the tool" for key in call.arguments if key not in properties]
    errors += [f"{call.name}: required argument {key!r} is missing" for key in params.get("required") or [] if key not in call.arguments]
    return errors


def user_text(messages: list[dict]) -> str:
    """The last user request of a conversation (for review material)."""
    return next((str(m.get("content", "")).strip() for m in reversed(messages) if m.get("role") == "user"), "")


def to_example(row: dict, line: int) -> dict[str, Any]:
    """One valid row -> one formatted example."""
    rendered = fg.render_row(row)
    calls = fg.calls_from_message(row["messages"][-1])
    return {
        "prompt": rendered["prompt"],
        "completion": rendered["completion"],
        "tools": row["tools"],
        "messages": row["messages"][:-1],  # what an app passes to the phone runtime (convert_litertlm runs them)
        "target_calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "split": row["metadata"],
        "user": user_text(row["messages"]),
        "function_names": [c.name for c in calls],
        "line": line,
    }


def format_rows(numbered: Iterable[tuple[int, dict | None, str]]) -> tuple[list[dict], list[dict]]:
    """(line, row, json_error) triples -> (examples, rejected [{line, reasons}])."""
    examples, rejected = [], []
    for line, row, json_error in numbered:
        reasons = [json_error] if row is None else validate_row(row)
        if reasons:
            rejected.append({"line": line, "reasons": reasons})
        else:
            examples.append(to_example(row, line))
    return examples, rejected


def describe_rejected(rejected: list[dict], source: str) -> str:
    shown = "; ".join(f"line {r['line']}: {', '.join(r['reasons'])}" for r in rejected[:MAX_ERRORS_SHOWN])
    more = f" (and {len(rejected) - MAX_ERRORS_SHOWN} more)" if len(rejected) > MAX_ERRORS_SHOWN else ""
    return f"{len(rejected)} invalid row(s) in {source}: {shown}{more}"


def length_stats(lengths: list[int], prefix: str) -> dict[str, float]:
    if not lengths:
        return {f"{prefix}_tokens_min": 0, f"{prefix}_tokens_median": 0, f"{prefix}_tokens_p95": 0, f"{prefix}_tokens_max": 0}
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        f"{prefix}_tokens_min": ordered[0],
        f"{prefix}_tokens_median": statistics.median(ordered),
        f"{prefix}_tokens_p95": p95,
        f"{prefix}_tokens_max": ordered[-1],
    }


def format_metrics(examples: list[dict], rejected: list[dict], lengths: list[int], completion_lengths: list[int],
                   max_length: int) -> dict[str, Any]:
    """Flat, stable keys for `dvc metrics show/diff`."""
    metrics: dict[str, Any] = {"rows_rejected": len(rejected), "max_length": max_length}
    for split in SPLITS:
        idx = [i for i, ex in enumerate(examples) if ex["split"] == split]
        metrics[f"{split}_rows"] = len(idx)
        metrics[f"{split}_rows_over_max_length"] = sum(lengths[i] > max_length for i in idx)
        metrics.update(length_stats([lengths[i] for i in idx], split))
        metrics.update(length_stats([completion_lengths[i] for i in idx], f"{split}_completion"))
        calls = Counter(name for i in idx for name in examples[i]["function_names"])
        metrics[f"{split}_rows_without_call"] = sum(not examples[i]["function_names"] for i in idx)
        metrics[f"{split}_rows_multi_call"] = sum(len(examples[i]["function_names"]) > 1 for i in idx)
        for name, count in sorted(calls.items()):
            metrics[f"{split}_calls_{name}"] = count
    return metrics


# ---------------------------------------------------------------- edge


def token_lengths(tokenizer_dir: Path, examples: list[dict]) -> tuple[list[int], list[int]]:
    """Token counts of prompt+completion and of the completion alone (the prompt carries its own <bos>)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    full = tokenizer([ex["prompt"] + ex["completion"] for ex in examples], add_special_tokens=False)["input_ids"]
    completion = tokenizer([ex["completion"] for ex in examples], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in full], [len(ids) for ids in completion]


def preview(path: Path) -> None:
    """Print each row's prompt and completion as one JSON object a line; bad rows to stderr."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    examples, rejected = format_rows(read_jsonl(path))
    for ex in examples:
        print(json.dumps({"line": ex["line"], "prompt": ex["prompt"], "completion": ex["completion"]}, ensure_ascii=False))
    if rejected:
        raise UserError(describe_rejected(rejected, str(path)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render rows into FunctionGemma prompt/completion examples.")
    parser.add_argument("--preview", type=Path, metavar="ROWS.jsonl", help="print rendered rows and exit")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, default=Path("data/raw/dataset.jsonl"))
    parser.add_argument("--tokenizer", type=Path, default=Path("models/base"))
    parser.add_argument("--out-dir", type=Path, default=Path("data/formatted"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/format.json"))
    args = parser.parse_args(argv)
    if args.preview:
        return preview(args.preview)

    params: FormatParams = load_params("format", path=args.params)
    if not args.raw.exists():
        raise UserError(f"{args.raw} does not exist: run `dvc repro fetch` first")
    examples, rejected = format_rows(read_jsonl(args.raw))
    if rejected and params.on_invalid == "error":
        raise UserError(describe_rejected(rejected, str(args.raw)) + "; fix these rows or set format.on_invalid: skip")
    for r in rejected:
        log.warning("skipping line %d: %s", r["line"], "; ".join(r["reasons"]))
    if not examples:
        raise UserError(f"no valid rows in {args.raw}")

    lengths, completion_lengths = token_lengths(args.tokenizer, examples)
    metrics = format_metrics(examples, rejected, lengths, completion_lengths, params.max_length)
    kept = [ex for ex, n in zip(examples, lengths)
            if not (params.drop_over_length and ex["split"] == "train" and n > params.max_length)]
    metrics["train_rows_dropped_over_length"] = len(examples) - len(kept)
    for split in SPLITS:
        count = write_jsonl(args.out_dir / f"{split}.jsonl", (ex for ex in kept if ex["split"] == split))
        log.info("wrote %d %s examples", count, split)
    write_jsonl(args.out_dir / "rejected.jsonl", rejected)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_main(main)
