"""eval stage: the base and the fine-tuned model on the same held-out prompts.

    dvc repro eval
    python -m stages.eval --params params.yaml --data data/formatted/eval.jsonl \\
        --base-model models/base --finetuned-model models/finetuned \\
        --metrics metrics/eval.json --per-function metrics/eval_per_function.json \\
        --confusion metrics/eval_confusion.json --mismatches metrics/eval_mismatches.jsonl \\
        --predictions data/eval/predictions.jsonl --record metrics/record/eval.json

Reads `eval.*` and the formatted eval rows (prompt + target_calls). The fine-tuned
model gets `eval.limit` rows (0 = all; otherwise evenly spaced, always the same
ones, pipeline/examples.select_rows); the base model the same rows, or an evenly
spaced subset of them (`eval.base_limit`) with its own budget
(`eval.base_max_new_tokens`). Both are decoded greedily in batches
(pipeline/generate.py) and scored by pipeline/scoring.py. Writes:
- `metrics/eval.json`: flat keys `<metric>_<model>` for model `finetuned` and
  `base`, `rows_<model>`, and `<metric>_delta` = fine-tuned minus base on the rows
  both evaluated (`rows_paired`). `exact_match_*` is FORMAT.md's reference metric;
  the finer metrics sit beside it; throughput (`examples_per_s_*`,
  `generated_tokens_per_s_*`) is generation time only. Every accuracy
  (pipeline.scoring.ACCURACIES: exact_match, exact_match_any_order, normalized_match,
  function_name_accuracy, no_call_accuracy) comes with its rows and Wilson's 95%
  interval: `<accuracy>_<model>_n`, `_ci_low`, `_ci_high`; its `_delta` with the
  paired figures over the rows both models evaluated: `<accuracy>_delta_n`, Newcombe's
  95% interval `_ci_low` / `_ci_high` and the exact McNemar `_p_value`
  (pipeline/stats.py). no_call_accuracy is over the rows whose target has no call
  (`_n` = 0 and the interval [0, 1] when the data has none).
- `data/eval/predictions.jsonl`: one line per evaluated row and model (`id`, a digest
  of prompt and target; `model`; raw text, parsed calls, the verdicts `exact`,
  `exact_any_order`, `normalized`, `malformed`): what convert_litertlm compares the
  phone model with and what `make report` pairs across revisions and experiments,
  without generating again.
- `metrics/eval_per_function.json`: exact match per target function, a list of
  records (`dvc plots show` draws it as a bar chart).
- `metrics/eval_confusion.json`: (expected, called) function of each call of the
  fine-tuned model, aligned call by call (DVC's confusion-matrix template).
- `metrics/eval_mismatches.jsonl`: every row the fine-tuned model got wrong, with
  the user request, target calls and both models' raw output and parsed calls.
- `metrics/record/eval.json`: what made the run (versions, device, threads); not a metric.
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
from pipeline.common import run_main, run_record, write_json, write_jsonl
from pipeline.stats import accuracy_figures, paired_difference
from pipeline.examples import read_examples, select_rows
from pipeline.generate import Generation, check_model_folder, generate, load_model
from pipeline.params import EvalParams, load_params

log = logging.getLogger("eval")

MODELS = ("finetuned", "base")  # the order models are reported in
DELTA_KEYS = (  # the accuracies' deltas come with paired intervals (build_metrics); these get the plain difference
    "argument_precision", "argument_recall", "argument_f1", "missed_call_rate", "spurious_call_rate", "unparseable_rate",
)


@dataclass(frozen=True)
class ModelResult:
    """One model's generations and scores on `rows` (indices into the evaluated rows, in order)."""

    rows: list[int]
    generation: Generation
    scores: list[scoring.RowScore]

    def score_of(self) -> dict[int, scoring.RowScore]:
        return dict(zip(self.rows, self.scores))


# ---------------------------------------------------------------- pure


def model_rows(count: int, params: EvalParams) -> dict[str, list[int]]:
    """Which of the `count` evaluated rows each model gets: all for the fine-tuned model; for the base
    model all of them or an evenly spaced subset (eval.base_limit), or none (compare_base false)."""
    everything = list(range(count))
    rows = {"finetuned": everything}
    if params.compare_base:
        rows["base"] = select_rows(everything, params.base_limit)
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
    """metrics/eval.json: `<metric>_<model>` for each model (every accuracy with `_n`, `_ci_low`, `_ci_high`)
    and, when both ran, `<metric>_delta` = fine-tuned minus base over the rows both evaluated
    (`rows_paired`; every accuracy's with `_n`, `_ci_low`, `_ci_high`, `_p_value`). Accuracies first
    (exact match leading), then the finer metrics: the order a reader of the file meets them in."""
    out: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for name in [m for m in MODELS if m in results]:
        scores = results[name].scores
        for accuracy in scoring.ACCURACIES:
            out.update(accuracy_figures(f"{accuracy}_{name}", scoring.accuracy_hits(scores, accuracy)))
        metrics = model_metrics(results[name])
        rest[f"rows_{name}"] = metrics.pop("rows")
        rest[f"rows_expecting_none_{name}"] = metrics.pop("rows_expecting_none")
        rest.update({f"{key}_{name}": value for key, value in metrics.items() if key not in scoring.ACCURACIES})
    if {"finetuned", "base"} <= results.keys():
        base = results["base"].score_of()
        tuned = results["finetuned"].score_of()
        paired = [i for i in results["base"].rows if i in tuned]
        for accuracy in scoring.ACCURACIES:
            change = paired_difference(scoring.accuracy_hits([base[i] for i in paired], accuracy),
                                       scoring.accuracy_hits([tuned[i] for i in paired], accuracy))
            out.update({f"{accuracy}_delta": change.difference, f"{accuracy}_delta_n": change.n,
                        f"{accuracy}_delta_ci_low": change.ci_low, f"{accuracy}_delta_ci_high": change.ci_high,
                        f"{accuracy}_delta_p_value": change.p_value})
        a = scoring.summarize([tuned[i] for i in paired])
        b = scoring.summarize([base[i] for i in paired])
        rest["rows_paired"] = len(paired)
        rest.update({f"{key}_delta": a[key] - b[key] for key in DELTA_KEYS})
    return {**out, **rest}


def _model_view(result: ModelResult, i: int) -> dict[str, Any]:
    score = result.scores[i]
    return {
        "raw": result.generation.texts[i],
        "calls": [{"name": c.name, "arguments": c.arguments} for c in score.predicted],
        "exact": score.exact,
        "exact_any_order": score.exact_any_order,
        "normalized": score.normalized,
        "malformed": score.malformed,
        "error": score.error,
        "stopped": result.generation.stopped[i],
    }


def prediction_records(rows: list[dict], results: dict[str, ModelResult]) -> list[dict[str, Any]]:
    """One record per evaluated row and model (data/eval/predictions.jsonl), models in MODELS order."""
    records = []
    for name in [m for m in MODELS if m in results]:
        result = results[name]
        for k, i in enumerate(result.rows):
            row = rows[i]
            records.append({
                "id": row["id"], "model": name, "eval_line": row["_line"], "source_line": row.get("line"),
                "user": row.get("user", ""), "target_calls": row["target_calls"], **_model_view(result, k),
                "prompt_tokens": result.generation.prompt_tokens[k], "new_tokens": len(result.generation.token_ids[k]),
            })
    return records


def mismatch_records(rows: list[dict], results: dict[str, ModelResult]) -> list[dict[str, Any]]:
    """One record per row the fine-tuned model got wrong (exact match), every model's view side by side."""
    position = {name: {i: k for k, i in enumerate(r.rows)} for name, r in results.items()}
    records = []
    for k, i in enumerate(results["finetuned"].rows):
        if results["finetuned"].scores[k].exact:
            continue
        row = rows[i]
        record = {"eval_line": row["_line"], "source_line": row.get("line"), "user": row.get("user", ""),
                  "target_calls": row["target_calls"]}
        record.update({name: _model_view(result, position[name][i]) for name, result in results.items()
                       if i in position[name]})
        records.append(record)
    return records


def confusion_records(scores: list[scoring.RowScore]) -> list[dict[str, str]]:
    return [{"expected": e, "called": c} for e, c in scoring.confusion_pairs(scores)]


# ---------------------------------------------------------------- edge


def torch_threads() -> int:
    """CPU threads torch computes with (throughput figures depend on it)."""
    import torch

    return torch.get_num_threads()


def evaluate_model(path: Path, rows: list[dict], indices: list[int], max_new_tokens: int, params: EvalParams) -> ModelResult:
    model, tokenizer = load_model(path, precision=params.precision)
    try:
        generation = generate(model, tokenizer, [rows[i]["prompt"] for i in indices], max_new_tokens=max_new_tokens,
                              batch_size=params.batch_size, prefill_batch=params.prefill_batch)
    finally:
        del model
        gc.collect()
    scores = [scoring.score_row(rows[i]["target_calls"], text) for i, text in zip(indices, generation.texts)]
    return ModelResult(indices, generation, scores)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="params.yaml (eval.* is read)")
    parser.add_argument("--data", type=Path, required=True, help="formatted eval rows (eval.jsonl)")
    parser.add_argument("--base-model", type=Path, required=True)
    parser.add_argument("--finetuned-model", type=Path, required=True)
    for flag in ("--metrics", "--per-function", "--confusion", "--mismatches", "--predictions", "--record"):
        parser.add_argument(flag, type=Path, required=True, help="output file (dvc.yaml declares it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params: EvalParams = load_params("eval", path=args.params)
    rows = select_rows(read_examples(args.data), params.limit)
    plan = model_rows(len(rows), params)
    paths = {"finetuned": args.finetuned_model, "base": args.base_model}
    for name in plan:
        check_model_folder(paths[name])  # fail before loading anything
    budgets = {"finetuned": params.max_new_tokens, "base": params.base_max_new_tokens or params.max_new_tokens}
    log.info("evaluating on %d rows (median prompt %d chars), batch %d: %s", len(rows),
             statistics.median(len(r["prompt"]) for r in rows), params.batch_size,
             "; ".join(f"{name}: {len(plan[name])} rows, up to {budgets[name]} new tokens" for name in plan))

    results = {}
    for name, indices in plan.items():
        log.info("generating with the %s model (%s)", name, paths[name])
        results[name] = evaluate_model(paths[name], rows, indices, budgets[name], params)
        summary = scoring.summarize(results[name].scores)
        exact = accuracy_figures("x", scoring.accuracy_hits(results[name].scores, "exact_match"))
        log.info("%s: exact match %.3f (95%% interval %.3f-%.3f) on %d rows, in any order %.3f, function names %.3f, "
                 "argument F1 %.3f", name, summary["exact_match"], exact["x_ci_low"], exact["x_ci_high"], summary["rows"],
                 summary["exact_match_any_order"], summary["function_name_accuracy"], summary["argument_f1"])
        log.info("%s: called (columns) vs expected (rows) function\n%s", name,
                 scoring.format_confusion(scoring.confusion_table(results[name].scores)))

    write_json(args.metrics, build_metrics(results))
    write_jsonl(args.predictions, prediction_records(rows, results))
    write_json(args.per_function, scoring.per_function({name: r.scores for name, r in results.items()}))
    write_json(args.confusion, confusion_records(results["finetuned"].scores))
    wrong = write_jsonl(args.mismatches, mismatch_records(rows, results))
    write_json(args.record, run_record(torch_threads=torch_threads()))
    log.info("wrote %s and %s (%d mismatching rows in %s)", args.metrics, args.predictions, wrong, args.mismatches)


if __name__ == "__main__":
    run_main(main)
