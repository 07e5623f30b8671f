"""Benchmark (not a test): one fine-tuned model converted with each quantization recipe, judged as the
convert_litertlm stage judges it, side by side.

    python bench/quant_bench.py                                  # models/finetuned, every eval row, all recipes
    python bench/quant_bench.py --recipes dynamic_int8,none --limit 48

For each recipe litert-torch offers here (convert.quantize: dynamic_int8, weight_only_int8,
dynamic_int4_block32, none), in a fresh child process (its own peak memory): the stage's own
conversion (stages/convert_litertlm.write_bundle) and its own judging (run_bundle: every row through
the LiteRT-LM runtime raw-prompt and as an app calls it, scored against the targets and paired with
the PyTorch answers of data/eval/predictions.jsonl). Prints file size, conversion time and peak
memory, the runtime's load time, prefill and decode tokens/s and peak memory, and exact match both
ways with its 95% interval and its paired change against PyTorch (`--constrained`: also the app way
with the runtime's constrained decoding, and on how many rows it changes the calls). The other convert.* params are
params.yaml's. Each child's phase (converting, judging) and the runtime's rows done come to stderr as
they happen, prefixed `[dynamic_int8]`. Reads the model folder, the eval rows and the predictions; writes
nothing unless --json is given (the bundles live in a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.common import UserError, read_json, run_main, write_json  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from train_bench import run_in_child  # noqa: E402

log = logging.getLogger("bench")
RECIPES = ("dynamic_int8", "weight_only_int8", "dynamic_int4_block32", "none")  # convert.quantize's choices


def run_child(spec_path: Path) -> None:
    from pipeline.examples import read_examples
    from stages import convert_litertlm as cv

    spec = read_json(spec_path)
    work = Path(spec["work"])
    params = dataclasses.replace(load_params("convert", path=spec["params"]), quantize=spec["recipe"],
                                 constrained_decoding=spec["constrained"])
    max_new_tokens = load_params("eval", path=spec["params"]).max_new_tokens
    rows = cv.checked_rows(read_examples(Path(spec["data"])), cv.read_predictions(Path(spec["predictions"])), spec["limit"])
    log.info("converting %s with quantize %s (litert-torch; minutes)", spec["model"], spec["recipe"])
    bundle, seconds, peak_mb = cv.write_bundle(Path(spec["model"]), work / "out", params)
    log.info("converted in %.0f s (%.1f MB); judging %d rows through the LiteRT-LM runtime: raw prompt, as an app "
             "calls it%s", seconds, bundle.stat().st_size / 1e6, len(rows),
             ", constrained" if params.constrained_decoding else "")
    judged, runtime = cv.run_bundle(bundle, rows, params, max_new_tokens)
    if params.constrained_decoding:  # does the constraint change anything? (rows whose calls differ from the free app way)
        free, constrained = judged.scores["litertlm_app"], judged.scores["litertlm_app_constrained"]
        runtime["constrained_same_calls"] = sum(cv.same_calls(a, b) for a, b in zip(free, constrained))
    write_json(work / "result.json", {"recipe": spec["recipe"], "file_size_mb": round(bundle.stat().st_size / 1e6, 1),
                                      "convert_seconds": round(seconds, 1), "convert_peak_memory_mb": round(peak_mb),
                                      **cv.judgement_metrics(judged), **runtime})


def pct(metrics: dict, key: str) -> str:
    return (f"{100 * metrics[key]:.1f}% [{100 * metrics[key + '_ci_low']:.1f}, {100 * metrics[key + '_ci_high']:.1f}]")


def change(metrics: dict, way: str) -> str:
    key = f"exact_match_change_{way}"
    return (f"{100 * metrics[key]:+.1f} [{100 * metrics[key + '_ci_low']:+.1f}, {100 * metrics[key + '_ci_high']:+.1f}] "
            f"({metrics[f'rows_fixed_{way}']} fixed, {metrics[f'rows_broken_{way}']} broken)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="fine-tuned model folder (default: the train stage's, from dvc.yaml)")
    parser.add_argument("--data", type=Path, help="formatted eval rows (default: the eval stage's)")
    parser.add_argument("--predictions", type=Path, help="the eval stage's predictions (default: from dvc.yaml)")
    parser.add_argument("--params", default="params.yaml", help="convert.* (but quantize) and eval.max_new_tokens")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--limit", type=int, default=0, help="judge N of the predicted rows, evenly spaced (0 = all)")
    parser.add_argument("--constrained", action="store_true", help="also run the app way with the runtime's constrained decoding")
    parser.add_argument("--json", type=Path, help="also write every recipe's figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        raise UserError(f"--recipes: unknown {unknown}; pick from {', '.join(RECIPES)}")
    # absolute: the runs happen in child processes in a temporary folder
    model = (args.model or stage_path("train", "--out-dir")).resolve()
    data = (args.data or stage_path("eval", "--data")).resolve()
    predictions = (args.predictions or stage_path("eval", "--predictions")).resolve()
    for path in (model / "config.json", data, predictions):
        if not path.exists():
            raise UserError(f"{path} not found: run `dvc repro eval` first (or pass --model/--data/--predictions)")
    print(f"{model}, rows of {predictions} ({'all' if not args.limit else args.limit}), recipes {', '.join(recipes)}; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        for recipe in recipes:
            work = Path(tmp) / recipe
            work.mkdir()
            result = run_in_child(__file__, {"recipe": recipe, "work": str(work), "model": str(model), "data": str(data),
                                             "predictions": str(predictions), "params": str(Path(args.params).resolve()),
                                             "limit": args.limit, "constrained": args.constrained})
            results.append(result)
            print(f"  {recipe}: {result['file_size_mb']} MB in {result['convert_seconds']:.0f} s; exact match raw "
                  f"{pct(result, 'exact_match_litertlm_raw')}, app {pct(result, 'exact_match_litertlm_app')} "
                  f"(PyTorch {pct(result, 'exact_match_pytorch')}, n = {result['rows_checked']})"
                  + (f", constrained {pct(result, 'exact_match_litertlm_app_constrained')} (its calls equal the "
                     f"unconstrained app way's on {result['constrained_same_calls']}/{result['rows_checked']} rows)"
                     if args.constrained else ""), flush=True)

    print("\n| recipe | file MB | convert s | convert peak GB | load s | prefill tok/s | decode tok/s | runtime peak GB "
          "| exact match raw prompt | as an app calls it | change vs PyTorch (app) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['recipe']} | {r['file_size_mb']} | {r['convert_seconds']:.0f} | {r['convert_peak_memory_mb'] / 1e3:.1f} "
              f"| {r['runtime_load_seconds']:.1f} | {r['litertlm_raw_prefill_tokens_per_s']:.0f} "
              f"| {r['litertlm_raw_decode_tokens_per_s']:.1f} | {r['runtime_peak_memory_mb'] / 1e3:.1f} "
              f"| {pct(r, 'exact_match_litertlm_raw')} | {pct(r, 'exact_match_litertlm_app')} | {change(r, 'litertlm_app')} |")
    first = results[0]
    print(f"PyTorch (the eval stage's answers): {pct(first, 'exact_match_pytorch')} on {first['rows_checked']} rows; "
          f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    run_main(main)
