"""eval stage: the base and the fine-tuned model on the same held-out prompts.

    dvc repro eval
    python -m stages.eval --params params.yaml --data data/formatted/eval.jsonl \\
        --base-model models/base --finetuned-model models/finetuned \\
        --metrics metrics/eval.json --per-function metrics/eval_per_function.json \\
        --confusion metrics/eval_confusion.json --mismatches metrics/eval_mismatches.jsonl

Reads `eval.*` and the formatted eval rows (prompt + target_calls). Both models
get the same prompts (`eval.limit` > 0 takes an evenly spaced, fixed subset)
and are decoded greedily in batches (pipeline/generate.py); the output is scored
by pipeline/scoring.py. Writes:
- `metrics/eval.json`: flat keys `<metric>_<model>` for model `finetuned` and
  `base`, and `<metric>_delta` = fine-tuned minus base. `exact_match_*` is
  FORMAT.md's reference metric; the finer metrics sit beside it; throughput
  (`examples_per_s_*`, `generated_tokens_per_s_*`) is generation time only.
- `metrics/eval_per_function.json`: exact match per target function, a list of
  records (`dvc plots show` draws it as a bar chart).
- `metrics/eval_confusion.json`: (expected, called) function of each call of the
  fine-tuned model, aligned call by call (DVC's confusion-matrix template).
- `metrics/eval_mismatches.jsonl`: every row the fine-tuned model got wrong, with
  the user request, target calls and both models' raw output and parsed calls.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import scoring
from pipeline.common import UserError, read_jsonl, run_main, run_record, write_json, write_jsonl
from pipeline.generate import Generation, check_model_folder, generate, load_model
from pipeline.params import EvalParams, load_params

log = logging.getLogger("eval")

MODELS = ("finetuned", "base")  # the order models are reported in
DELTA_KEYS = (
    "exact_match", "normalized_match", "function_name_accuracy", "argument_precision", "argument_recall",
    "argument_f1", "missed_call_rate", "spurious_call_rate", "unparseable_rate",
)


@dataclass(frozen=True)
class ModelResult:
    generation: Generation
    scores: list[scoring.RowScore]


# ---------------------------------------------------------------- pure


def select_rows(rows: list[dict], limit: int) -> list[dict]:
    """All rows (limit 0), or `limit` rows evenly spaced over the file, in file order (deterministic)."""
    if limit <= 0 or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def check_rows(numbered: list[tuple[int, dict | None, str]], path: Path) -> list[dict]:
    """The formatted rows, each with its line number; every bad line named in one UserError."""
    rows, errors = [], []
    for line, row, error in numbered:
        if row is not None:
            if not isinstance(row.get("prompt"), str) or not row["prompt"]:
                error = "no 'prompt' string"
            elif not isinstance(row.get("target_calls"), list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict)
                for c in row["target_calls"]
            ):
                error = "'target_calls' must be a list of {name, arguments}"
        if error:
            errors.append(f"line {line}: {error}")
        else:
            rows.append({**row, "_line": line})
    if errors:
        shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise UserError(f"{path} has {len(errors)} bad rows ({shown}): rebuild it with `dvc repro format`")
    if not rows:
        raise UserError(f"{path} holds no rows: check the eval split of your data (rows with metadata 'eval')")
    return rows


def model_metrics(result: ModelResult) -> dict[str, float | int]:
    """Scores plus throughput for one model (keys without the model suffix)."""
    gen = result.generation
    metrics: dict[str, float | int] = scoring.summarize(result.scores)
    metrics.update(
        examples_per_s=len(gen.texts) / gen.seconds if gen.seconds else 0.0,
        generated_tokens_per_s=gen.new_tokens / gen.seconds if gen.seconds else 0.0,
        generated_tokens=gen.new_tokens,
        generation_seconds=gen.seconds,
        truncated_rate=sum(not s for s in gen.stopped) / len(gen.stopped) if gen.stopped else 0.0,
    )
    return metrics


def build_metrics(results: dict[str, ModelResult]) -> dict[str, Any]:
    """metrics/eval.json: `<metric>_<model>` for each model and `<metric>_delta` when both ran."""
    out: dict[str, Any] = {}
    per_model = {name: model_metrics(result) for name, result in results.items()}
    for name, metrics in per_model.items():
        out["rows"] = metrics.pop("rows")
        out["rows_expecting_none"] = metrics.pop("rows_expecting_none")
        out.update({f"{key}_{name}": value for key, value in metrics.items()})
    if {"finetuned", "base"} <= per_model.keys():
        out.update({f"{key}_delta": per_model["finetuned"][key] - per_model["base"][key] for key in DELTA_KEYS})
    return out


def _model_view(result: ModelResult, i: int) -> dict[str, Any]:
    score = result.scores[i]
    return {
        "raw": result.generation.texts[i],
        "calls": [{"name": c.name, "arguments": c.arguments} for c in score.predicted],
        "exact": score.exact,
        "normalized": score.normalized,
        "malformed": score.malformed,
        "error": score.error,
        "stopped": result.generation.stopped[i],
    }


def mismatch_records(rows: list[dict], results: dict[str, ModelResult]) -> list[dict[str, Any]]:
    """One record per row the fine-tuned model got wrong (exact match), both models' views side by side."""
    records = []
    for i, row in enumerate(rows):
        if results["finetuned"].scores[i].exact:
            continue
        record = {"eval_line": row["_line"], "source_line": row.get("line"), "user": row.get("user", ""),
                  "target_calls": row["target_calls"]}
        record.update({name: _model_view(result, i) for name, result in results.items()})
        records.append(record)
    return records


def confusion_records(scores: list[scoring.RowScore]) -> list[dict[str, str]]:
    return [{"expected": e, "called": c} for e, c in scoring.confusion_pairs(scores)]


# ---------------------------------------------------------------- edge


def torch_threads() -> int:
    """CPU threads torch computes with (throughput figures depend on it)."""
    import torch

    return torch.get_num_threads()


def evaluate_model(path: Path, rows: list[dict], params: EvalParams) -> ModelResult:
    model, tokenizer = load_model(path)
    try:
        generation = generate(model, tokenizer, [r["prompt"] for r in rows],
                              max_new_tokens=params.max_new_tokens, batch_size=params.batch_size)
    finally:
        del model
        gc.collect()
    scores = [scoring.score_row(r["target_calls"], text) for r, text in zip(rows, generation.texts)]
    return ModelResult(generation, scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/formatted/eval.jsonl"))
    parser.add_argument("--base-model", type=Path, default=Path("models/base"))
    parser.add_argument("--finetuned-model", type=Path, default=Path("models/finetuned"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-function", type=Path, default=Path("metrics/eval_per_function.json"))
    parser.add_argument("--confusion", type=Path, default=Path("metrics/eval_confusion.json"))
    parser.add_argument("--mismatches", type=Path, default=Path("metrics/eval_mismatches.jsonl"))
    args = parser.parse_args(argv)

    params: EvalParams = load_params("eval", path=args.params)
    if not args.data.exists():
        raise UserError(f"{args.data} not found: run `dvc repro format` first")
    rows = select_rows(check_rows(list(read_jsonl(args.data)), args.data), params.limit)
    paths = {"finetuned": args.finetuned_model, **({"base": args.base_model} if params.compare_base else {})}
    for path in paths.values():
        check_model_folder(path)  # fail before loading anything
    lengths = [len(r["prompt"]) for r in rows]
    log.info("evaluating %s on %d rows (median prompt %d chars), batch %d, up to %d new tokens",
             " and ".join(paths), len(rows), statistics.median(lengths), params.batch_size, params.max_new_tokens)

    results = {}
    for name, path in paths.items():
        log.info("generating with the %s model (%s)", name, path)
        results[name] = evaluate_model(path, rows, params)
        summary = scoring.summarize(results[name].scores)
        log.info("%s: exact match %.3f, function names %.3f, argument F1 %.3f", name,
                 summary["exact_match"], summary["function_name_accuracy"], summary["argument_f1"])
        log.info("%s: called (columns) vs expected (rows) function\n%s", name,
                 scoring.format_confusion(scoring.confusion_table(results[name].scores)))

    metrics = build_metrics(results)
    metrics.update({f"run_{k}": v for k, v in run_record(torch_threads=torch_threads()).items()})
    write_json(args.metrics, metrics)
    write_json(args.per_function, scoring.per_function({name: r.scores for name, r in results.items()}))
    write_json(args.confusion, confusion_records(results["finetuned"].scores))
    wrong = write_jsonl(args.mismatches, mismatch_records(rows, results))
    log.info("wrote %s (%d mismatching rows in %s)", args.metrics, wrong, args.mismatches)


if __name__ == "__main__":
    run_main(main)
