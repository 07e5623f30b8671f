"""format stage: stored rows (Mobile Actions, OpenAI-style or xLAM) -> FunctionGemma prompt/completion text.

    dvc repro format
    python -m stages.format --params params.yaml --raw data/raw/dataset.jsonl --source data/raw/source.json \
        --tokenizer models/base --out-dir data/formatted --metrics metrics/format.json \
        --per-function metrics/format_per_function.json --record metrics/record/format.json
    python -m stages.format --preview ROWS      # a .jsonl/.json/.parquet file or folder; no model needed

Reads `format.*` and `data.schema`. Every stored row of `data/raw/dataset.jsonl` gets a verdict:
its bytes are parsed (pipeline/row_files.py), its shape detected and normalized into the one
internal row (pipeline/rows.py), validated, and rendered by `pipeline.functiongemma`, the one
owner of the format. A rejected row is named by the user's own file and line (JSONL) or row
index (JSON list, Parquet), through the segments fetch recorded in `data/raw/source.json`.

Writes `data/formatted/train.jsonl` and `eval.jsonl` (one example per line: prompt, completion,
tools, messages, target_calls, split, split_from, user, request, function_names, shape, line, where),
`data/formatted/rejected.jsonl` (where and why every rejected row was dropped),
`data/formatted/hygiene.jsonl` (every hygiene finding: duplicates, leaked requests, argument
values that contradict their declared type or enum, functions only in one split),
`metrics/format.json` (flat counts a reviewer compares, as many whatever the data: rows per split,
rows over max_length, rows without a call or with several, rejected rows, row shapes, how rows got
their split, the hygiene counts), `metrics/format_per_function.json` (rows and calls per function and
split, one record per function: a plot, since a tool set can have thousands of functions) and
`metrics/record/format.json` (not a metric: token-length distribution per split, the developer text
xLAM rows got, tokenizer library versions).

The split. A row that carries one (`metadata`: "train" or "eval") keeps it; a row from a file
given per split (data.hub_split_files) takes its file's; every other row is split by the
rule of pipeline/split.py: rows are grouped by user request (case and spacing folded); a
request goes to eval when the first 8 bytes of sha256("<format.split_seed>\0<request>"), as a
fraction of 2**64, are below `format.eval_fraction`; and when a function reaches its
`format.stratify_min_requests`-th distinct request (in file order) with none of them in eval,
that request goes to eval. A request's split therefore depends only on its first row and the
rows before it: appending rows never moves an existing one, the same request never lands in
both splits, and every function with at least that many distinct requests appears in eval.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline import functiongemma as fg
from pipeline import hygiene, mobile_actions, row_files, rows
from pipeline.common import UserError, package_versions, read_json, run_main, write_json, write_jsonl
from pipeline.examples import select_rows
from pipeline.params import PARAMS_FILE, FormatParams, load_params
from pipeline.split import assign_splits

log = logging.getLogger("format")

SPLITS = ("train", "eval")
MAX_ERRORS_SHOWN = 20

# The row checks live in pipeline/rows.py; these names stay importable from here.
validate_row = rows.validate_row
user_text = rows.user_text


# ---------------------------------------------------------------- pure


def developer_text(params: FormatParams) -> str:
    """The developer turn given to xLAM rows: the param, or FunctionGemma's standard instruction line."""
    return params.xlam_developer_text or mobile_actions.INSTRUCTION


def to_example(row: dict, line: int, where: str = "", shape: str = "mobile_actions",
               split: str | None = None, split_from: str = "data") -> dict[str, Any]:
    """One valid internal row -> one formatted example (split None: to be given by the rule)."""
    rendered = fg.render_row(row)
    calls = fg.calls_from_message(row["messages"][-1])
    return {
        "prompt": rendered["prompt"],
        "completion": rendered["completion"],
        "tools": row["tools"],
        "messages": row["messages"][:-1],  # what an app passes to the phone runtime (convert_litertlm runs them)
        "target_calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "split": row.get("metadata") if split is None else split,
        "split_from": split_from,
        "user": rows.user_text(row["messages"]),
        "request": rows.request_key(row["messages"]),
        "function_names": [c.name for c in calls],
        "shape": shape,
        "line": line,
        "where": where or f"line {line}",
    }


def format_rows(stored: Iterable[tuple[int, str, str | None, Any, str]], schema: str = "auto",
                xlam_developer_text: str = mobile_actions.INSTRUCTION) -> tuple[list[dict], list[dict]]:
    """(line, where, file split, parsed row or None, read error) -> (examples, rejected [{line, where, shape, reasons}]).

    An example's split is its row's `metadata`, else its file's, else None (the rule decides later).
    """
    examples, rejected = [], []
    for line, where, file_split, obj, read_error in stored:
        shape, reasons = "", [read_error] if read_error else []
        if not reasons:
            normalized = rows.normalize_row(obj, schema, xlam_developer_text)
            shape, reasons = normalized.shape, normalized.errors or rows.validate_row(normalized.row)
        if reasons:
            rejected.append({"line": line, "where": where, "shape": shape or None, "reasons": reasons})
            continue
        row = normalized.row
        split, split_from = (row.get("metadata"), "data") if row.get("metadata") else (file_split, "file")
        examples.append(to_example(row, line, where, shape, split, split_from if split else "rule"))
    return examples, rejected


def split_by_rule(examples: list[dict], params: FormatParams) -> int:
    """Give every example without a split one by the rule (pipeline/split.py), in place; returns the stratified count."""
    todo = [ex for ex in examples if ex["split"] is None]
    splits, forced = assign_splits(((ex["request"], ex["function_names"]) for ex in todo),
                                   params.eval_fraction, params.split_seed, params.stratify_min_requests)
    for ex, split in zip(todo, splits):
        ex["split"] = split
    return forced


def source_metrics(examples: list[dict], rejected: list[dict], forced: int, params: FormatParams) -> dict[str, Any]:
    """How the rows were read and split: shapes, split origins, the developer text xLAM rows got."""
    shapes = Counter(ex["shape"] for ex in examples)
    origins = Counter(ex["split_from"] for ex in examples)
    metrics: dict[str, Any] = {"rows_read": len(examples) + len(rejected)}
    metrics.update({f"rows_shape_{shape}": shapes.get(shape, 0) for shape in rows.SHAPES})
    metrics.update({f"rows_split_from_{origin}": origins.get(origin, 0) for origin in ("data", "file")})
    metrics["rows_split_by_rule"] = origins.get("rule", 0)
    metrics["rows_split_by_rule_eval"] = sum(ex["split_from"] == "rule" and ex["split"] == "eval" for ex in examples)
    metrics["requests_moved_to_eval_for_stratification"] = forced
    return metrics


def describe_rejected(rejected: list[dict], source: str = "") -> str:
    shown = "; ".join(f"{r.get('where') or 'line ' + str(r['line'])}: {', '.join(r['reasons'])}"
                      for r in rejected[:MAX_ERRORS_SHOWN])
    more = f" (and {len(rejected) - MAX_ERRORS_SHOWN} more)" if len(rejected) > MAX_ERRORS_SHOWN else ""
    return f"{len(rejected)} invalid row(s){' read from ' + source if source else ''}: {shown}{more}"


def describe_leaks(leaks: dict[str, dict[str, list[int]]], examples: list[dict]) -> str:
    shown = "; ".join(f"{examples[p['train'][0]]['user'][:60]!r} ({examples[p['train'][0]]['where']} in train, "
                      f"{examples[p['eval'][0]]['where']} in eval)" for p in list(leaks.values())[:5])
    more = f" (and {len(leaks) - 5} more)" if len(leaks) > 5 else ""
    return (f"{len(leaks)} user request(s) appear in both train and eval: {shown}{more}; give them one split, "
            "or set format.on_leak: drop_from_train (or warn)")


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


def format_metrics(examples: list[dict], rejected: list[dict], lengths: list[int], max_length: int) -> dict[str, Any]:
    """Flat, stable keys for `dvc metrics show/diff`: counts, as many keys whatever the data."""
    metrics: dict[str, Any] = {"rows_rejected": len(rejected)}
    for split in SPLITS:
        idx = [i for i, ex in enumerate(examples) if ex["split"] == split]
        metrics[f"{split}_rows"] = len(idx)
        metrics[f"{split}_rows_over_max_length"] = sum(lengths[i] > max_length for i in idx)
        metrics[f"{split}_rows_without_call"] = sum(not examples[i]["function_names"] for i in idx)
        metrics[f"{split}_rows_multi_call"] = sum(len(examples[i]["function_names"]) > 1 for i in idx)
    return metrics


def format_record(examples: list[dict], lengths: list[int], completion_lengths: list[int],
                  params: FormatParams) -> dict[str, Any]:
    """metrics/record/format.json: what the run saw and used, not compared as metrics: token lengths per
    split (prompt + completion, and the completion alone), the developer text xLAM rows got."""
    record: dict[str, Any] = {"xlam_developer_text": developer_text(params)}
    for split in [*SPLITS, *sorted({ex["split"] for ex in examples} - set(SPLITS))]:
        idx = [i for i, ex in enumerate(examples) if ex["split"] == split]
        record.update(length_stats([lengths[i] for i in idx], split))
        record.update(length_stats([completion_lengths[i] for i in idx], f"{split}_completion"))
    return record


# ---------------------------------------------------------------- edge


def read_stored(raw: Path, segments: list[dict] | None, max_row_bytes: int) -> Iterator[tuple[int, str, str | None, Any, str]]:
    """(line, where, file split, parsed row or None, reason) for every non-blank line of a gathered JSONL."""
    for line, data, error in row_files.read_lines(raw, max_row_bytes):
        where, split = row_files.locate(segments, line, str(raw))
        obj = None
        if data is not None:
            obj, error = row_files.parse_row(data)
        yield line, where, split, obj, error


def read_segments(source: Path | None) -> list[dict] | None:
    """The segments fetch recorded in data/raw/source.json (None: name lines of the raw file itself)."""
    if source is None:
        return None
    if not source.exists():
        raise UserError(f"{source} does not exist: run `dvc repro fetch` first")
    segments = read_json(source).get("segments")
    return segments if isinstance(segments, list) else None


@functools.lru_cache(maxsize=2)
def load_tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def token_lengths(tokenizer_dir: Path, examples: list[dict]) -> tuple[list[int], list[int]]:
    """Token counts of prompt+completion and of the completion alone (the prompt carries its own <bos>)."""
    tokenizer = load_tokenizer(Path(tokenizer_dir).resolve())
    full = tokenizer([ex["prompt"] + ex["completion"] for ex in examples], add_special_tokens=False)["input_ids"]
    completion = tokenizer([ex["completion"] for ex in examples], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in full], [len(ids) for ids in completion]


def preview(path: Path, params_path: str) -> None:
    """Print each row's prompt and completion as one JSON object a line; bad rows to stderr.

    PATH is a .jsonl file (named by its own lines) or a .json/.parquet file or a folder of them
    (gathered as fetch gathers them).
    """
    data, params = load_params("data", "format", path=params_path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    with tempfile.TemporaryDirectory(prefix="preview-") as tmp:
        raw, segments = path, None
        if not (path.is_file() and path.suffix.lower() == ".jsonl"):
            raw = Path(tmp) / "rows.jsonl"
            segments = row_files.gather([(f, str(f), None) for f in row_files.local_files(path)], raw)
        examples, rejected = format_rows(read_stored(raw, segments, params.max_row_bytes), data.schema,
                                         developer_text(params))
    for ex in examples:
        print(json.dumps({"where": ex["where"], "shape": ex["shape"], "prompt": ex["prompt"],
                          "completion": ex["completion"]}, ensure_ascii=False))
    if rejected:
        raise UserError(describe_rejected(rejected))


def hold_out_validation(examples: list[dict], count: int) -> int:
    """Move `count` train examples, evenly spaced, to the validation split (in place): a tuning set that
    is neither trained on nor the held-out eval split. Returns how many were moved."""
    train = [ex for ex in examples if ex["split"] == "train"]
    if count and count >= len(train):
        raise UserError(f"format.validation_rows {count} would leave no train rows ({len(train)} in all): lower it")
    for ex in select_rows(train, count) if count else []:
        ex["split"] = "validation"
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render rows into FunctionGemma prompt/completion examples.")
    parser.add_argument("--preview", type=Path, metavar="ROWS", help="print rendered rows of a file or folder and exit "
                        "(needs no other argument; data.schema and format.* come from --params, default params.yaml)")
    parser.add_argument("--params", help="params.yaml (data.schema and format.* are read)")
    parser.add_argument("--raw", type=Path, help="the fetched rows, data/raw/dataset.jsonl")
    parser.add_argument("--source", type=Path, help="data/raw/source.json: names each line's own file and line")
    parser.add_argument("--tokenizer", type=Path, help="the base model folder (its tokenizer counts tokens)")
    parser.add_argument("--out-dir", type=Path, help="where train.jsonl, eval.jsonl, rejected.jsonl, hygiene.jsonl go")
    parser.add_argument("--metrics", type=Path, help="metrics/format.json")
    parser.add_argument("--per-function", type=Path, help="metrics/format_per_function.json (rows and calls per function)")
    parser.add_argument("--record", type=Path, help="metrics/record/format.json (token lengths, developer text; not a metric)")
    args = parser.parse_args(argv)
    if args.preview:
        return preview(args.preview, args.params or PARAMS_FILE)
    missing = [f"--{k.replace('_', '-')}" for k in ("params", "raw", "tokenizer", "out_dir", "metrics", "per_function", "record")
               if getattr(args, k) is None]
    if missing:
        parser.error(f"the format stage needs {', '.join(missing)} (dvc.yaml's cmd passes them all)")

    data, params = load_params("data", "format", path=args.params)
    if not args.raw.exists():
        raise UserError(f"{args.raw} does not exist: run `dvc repro fetch` first")
    stored = read_stored(args.raw, read_segments(args.source), params.max_row_bytes)
    examples, rejected = format_rows(stored, data.schema, developer_text(params))
    if rejected and params.on_invalid == "error":
        raise UserError(describe_rejected(rejected) + "; fix these rows or set format.on_invalid: skip")
    for r in rejected:
        log.warning("skipping %s: %s", r["where"], "; ".join(r["reasons"]))
    if not examples:
        raise UserError(f"no valid rows in {args.raw}")

    forced = split_by_rule(examples, params)
    leaks = hygiene.find_leaks(examples)
    if leaks and params.on_leak == "error":
        raise UserError(describe_leaks(leaks, examples))
    kept = examples
    if params.on_leak == "drop_from_train":
        kept = [ex for ex in examples if not (ex["split"] == "train" and ex["request"] in leaks)]
    hygiene_metrics, findings = hygiene.report(kept, leaks, len(examples) - len(kept), leak_examples=examples)
    held_out = hold_out_validation(kept, params.validation_rows)

    lengths, completion_lengths = token_lengths(args.tokenizer, kept)
    metrics = format_metrics(kept, rejected, lengths, params.max_length)
    functions = hygiene.function_table(kept)
    metrics.update(source_metrics(examples, rejected, forced, params))
    metrics.update(hygiene_metrics)
    metrics["validation_rows"] = held_out
    written = [ex for ex, n in zip(kept, lengths)
               if not (params.drop_over_length and ex["split"] == "train" and n > params.max_length)]
    metrics["train_rows_dropped_over_length"] = len(kept) - len(written)
    for split in (*SPLITS, "validation"):
        count = write_jsonl(args.out_dir / f"{split}.jsonl", (ex for ex in written if ex["split"] == split))
        log.info("wrote %d %s examples", count, split)
    write_jsonl(args.out_dir / "rejected.jsonl", rejected)
    write_jsonl(args.out_dir / "hygiene.jsonl", findings)
    write_json(args.metrics, metrics)
    write_json(args.per_function, functions)
    write_json(args.record, {**format_record(kept, lengths, completion_lengths, params),
                             **{f"version_{k}": v for k, v in package_versions("transformers", "tokenizers").items()}})
    log.info("rows: %d read, %d rejected; shapes: %s; split: %d from the data, %d from their file, %d by the rule "
             "(%d to eval, %d of them for stratification)", metrics["rows_read"], len(rejected),
             ", ".join(f"{s} {metrics[f'rows_shape_{s}']}" for s in rows.SHAPES), metrics["rows_split_from_data"],
             metrics["rows_split_from_file"], metrics["rows_split_by_rule"], metrics["rows_split_by_rule_eval"], forced)
    for line in hygiene.summary(metrics, findings, params.on_leak, functions):
        log.info("hygiene: %s", line)
    if not metrics["eval_rows"]:
        log.warning("no eval rows: give some rows metadata 'eval' or set format.eval_fraction above 0")


if __name__ == "__main__":
    run_main(main)
