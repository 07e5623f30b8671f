"""Benchmark (not a test): the notebook's way of evaluating vs the eval stage's, same model, same rows.

    python bench/eval_bench.py --model models/base --data data/formatted/eval.jsonl --examples 32
    python bench/eval_bench.py --model models/finetuned --data data/formatted/eval.jsonl --threads 1

The notebook's way: a transformers `pipeline("text-generation")`, one prompt
at a time, with the pipeline's default max new tokens (printed; the model's
generation_config may set its own). Two things are pinned so the two ways can
be compared row by row: greedy decoding (`do_sample=False`; the pipeline
would otherwise sample) and `add_special_tokens=False` (the prompts already
start with `<bos>`; the tokenizer would add a second one). Special tokens are
kept in the output so the calls can be parsed.

Ours: pipeline.generate (batched, sorted by length, KV cache, stop tokens) with
`eval.batch_size` and `eval.max_new_tokens` from params.yaml.

Ours runs twice: as configured, and with the pipeline's budget (the same
work per row: only the batching differs). Prints examples/s of each, the
ratios, and whether both gave the same predictions: the same parsed calls and
the same exact-match verdict per row, and whether our text equals the
pipeline's (or is its prefix, for rows that ran out of our smaller budget). Reads the model folder and formatted rows;
writes nothing unless --json is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import scoring  # noqa: E402
from pipeline.common import run_main, write_json  # noqa: E402
from pipeline.examples import read_examples, select_rows  # noqa: E402
from pipeline.generate import generate, load_model  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import load_params  # noqa: E402

log = logging.getLogger("bench")


def pipeline_max_new_tokens(pipe) -> int:
    """What a call without max_new_tokens generates at most, as the pipeline resolves it."""
    config = pipe.model.generation_config
    own = {k: v for k, v in config.to_diff_dict().items() if k in ("max_new_tokens", "max_length")}
    if "max_new_tokens" in own:
        return own["max_new_tokens"]
    default = pipe._generation_defaults.get("max_new_tokens")  # the pipeline's own default (256 in transformers 5)
    if default is None:
        raise RuntimeError("cannot tell the pipeline's default max_new_tokens for this transformers version")
    return default


def run_notebook_way(model, tokenizer, prompts: list[str]) -> tuple[list[str], float, float, int]:
    """(texts, wall seconds, CPU seconds, max_new_tokens): one prompt at a time through a text-generation pipeline."""
    from tqdm import tqdm
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    budget = pipeline_max_new_tokens(pipe)
    kwargs = dict(do_sample=False, return_full_text=False, skip_special_tokens=False, add_special_tokens=False)
    pipe(prompts[0], max_new_tokens=2, **kwargs)  # warm-up, not timed
    texts = []
    started, cpu = time.perf_counter(), time.process_time()
    for prompt in tqdm(prompts, desc="pipeline", unit="ex"):
        texts.append(pipe(prompt, **kwargs)[0]["generated_text"])
    return texts, time.perf_counter() - started, time.process_time() - cpu, budget


def agreement(rows: list[dict], notebook: list[str], ours: list[str]) -> dict[str, int]:
    counts = {"same_calls": 0, "same_exact_match": 0, "same_text": 0, "ours_is_prefix": 0,
              "exact_notebook": 0, "exact_ours": 0}
    for row, a, b in zip(rows, notebook, ours):
        sa, sb = scoring.score_row(row["target_calls"], a), scoring.score_row(row["target_calls"], b)
        counts["same_calls"] += sa.predicted == sb.predicted and sa.malformed == sb.malformed
        counts["same_exact_match"] += sa.exact == sb.exact
        counts["same_text"] += a == b
        counts["ours_is_prefix"] += a != b and a.startswith(b)
        counts["exact_notebook"] += sa.exact
        counts["exact_ours"] += sb.exact
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the fetch stage's base model, from dvc.yaml)")
    parser.add_argument("--data", type=Path, help="formatted eval rows (default: the eval stage's, from dvc.yaml)")
    parser.add_argument("--params", default="params.yaml", help="eval.batch_size and eval.max_new_tokens come from here")
    parser.add_argument("--examples", type=int, default=32, help="rows, evenly spaced over --data as eval.limit picks them")
    parser.add_argument("--batch-size", type=int, help="override eval.batch_size")
    parser.add_argument("--max-new-tokens", type=int, help="override eval.max_new_tokens for our way")
    parser.add_argument("--threads", type=int, help="torch threads for both ways (default: torch's choice, one per core)")
    parser.add_argument("--json", type=Path, help="also write every row's outputs and the figures here")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params("eval", path=args.params)
    batch_size = args.batch_size or params.batch_size
    budget = args.max_new_tokens or params.max_new_tokens
    args.model = args.model or stage_path("fetch", "--model-dir")
    args.data = args.data or stage_path("eval", "--data")
    rows = select_rows(read_examples(args.data), args.examples)
    prompts = [r["prompt"] for r in rows]
    model, tokenizer = load_model(args.model)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    print(f"model {args.model}, {len(rows)} rows of {args.data}, prompt tokens median {statistics.median(lengths):.0f} "
          f"(min {min(lengths)}, max {max(lengths)}), device {model.device}, {torch.get_num_threads()} torch threads, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    generate(model, tokenizer, prompts[:1], max_new_tokens=2, batch_size=1, progress=False)  # warm-up, not timed
    notebook, notebook_s, notebook_cpu, notebook_budget = run_notebook_way(model, tokenizer, prompts)
    n = len(rows)
    print(f"notebook way: pipeline('text-generation'), one prompt at a time, greedy, max_new_tokens {notebook_budget} "
          f"(the pipeline's default): {n} rows in {notebook_s:.1f} s = {n / notebook_s:.3f} examples/s "
          f"({notebook_cpu:.1f} CPU s)", flush=True)

    report: dict = {"rows": n, "threads": torch.get_num_threads(), "notebook_max_new_tokens": notebook_budget,
                    "notebook_seconds": notebook_s, "notebook_cpu_seconds": notebook_cpu, "runs": []}
    identical = True
    # Ours as the eval stage runs it, then with the pipeline's budget (same work per row, only the batching differs).
    for label, max_new in (("as configured", budget), ("same budget as the pipeline", notebook_budget)):
        if label != "as configured" and max_new == budget:
            continue
        cpu = time.process_time()
        ours = generate(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=batch_size)
        ours_cpu = time.process_time() - cpu
        agree = agreement(rows, notebook, ours.texts)
        print(f"ours ({label}): pipeline.generate, batch {batch_size}, max_new_tokens {max_new}: {n} rows in "
              f"{ours.seconds:.1f} s = {n / ours.seconds:.3f} examples/s ({ours_cpu:.1f} CPU s), "
              f"{ours.new_tokens / ours.seconds:.1f} generated tokens/s ({sum(not s for s in ours.stopped)} rows ran out of budget)")
        print(f"  speed-up: {notebook_s / ours.seconds:.1f}x examples/s (wall clock), {notebook_cpu / ours_cpu:.1f}x in CPU time "
              f"(less sensitive to other jobs on a shared machine); load average now "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"  same parsed calls: {agree['same_calls']}/{n}; same exact-match verdict: {agree['same_exact_match']}/{n} "
              f"(exact matches: notebook {agree['exact_notebook']}, ours {agree['exact_ours']}); same text: "
              f"{agree['same_text']}/{n}; ours a strict prefix of the pipeline's text: {agree['ours_is_prefix']}/{n}", flush=True)
        identical &= agree["same_exact_match"] == n
        report["runs"].append({"label": label, "batch_size": batch_size, "max_new_tokens": max_new, "seconds": ours.seconds,
                               "cpu_seconds": ours_cpu, "speedup": notebook_s / ours.seconds, **agree,
                               "outputs": [{"eval_line": r["_line"], "notebook": a, "ours": b}
                                           for r, a, b in zip(rows, notebook, ours.texts)]})
    print(f"identical exact-match results: {'yes' if identical else 'NO'}")
    if args.json:
        write_json(args.json, report)

if __name__ == "__main__":
    run_main(main)
