"""Benchmark (not a test): the notebook's way of evaluating vs the eval stage's, same model, same rows,
and each speed choice of the eval stage on its own, against this machine's matmul rate.

    python bench/eval_bench.py --examples 32                                   # the offline base model
    python bench/eval_bench.py --model models/finetuned --examples 32 --variants all

The notebook's way: a transformers `pipeline("text-generation")`, one prompt at a time, with the
pipeline's default max new tokens (printed; the model's generation_config may set its own). Two
things are pinned so the ways can be compared row by row: greedy decoding (`do_sample=False`; the
pipeline would otherwise sample) and `add_special_tokens=False` (the prompts already start with
`<bos>`; the tokenizer would add a second one). Special tokens are kept so the calls can be parsed.

Ours (the reference): pipeline.generate in float32 with one prompt prefilled at a time (batched,
sorted by length, KV cache, stop tokens), `eval.batch_size` and `eval.max_new_tokens` of
params.yaml; it also runs with the pipeline's budget when that differs (the same work per row).

Variants (`--variants`, each one change against the reference, `all` = every one):
- `bf16`: the weights in bfloat16 (the dtype `eval.precision: bf16` loads; native on CPUs with
  AVX512-BF16 or AMX and on GPUs);
- `prefill8`: 8 prompts prefilled together, left-padded (`eval.prefill_batch: 8`);
- `threads1`: one torch thread instead of torch's default (one per core);
- `library`: transformers' own batched `model.generate`, left padding, the same stop ids, greedy,
  the same batches (instead of the hand-written loop);
- `default`: the eval stage as params.yaml configures it (`eval.precision`, `eval.prefill_batch`).
For each: examples/s and the ratio to the notebook's way, prefill and decode time with their
achieved model FLOP/s and share of this machine's matmul rate (measured in the same run, float32 and,
where native, bf16), and the rows whose exact-match verdict or text differs from the reference.
Reads the model folder and formatted rows; writes nothing unless --json is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flops import decode_flops, matmul_rate, prefill_flops  # noqa: E402
from pipeline import scoring  # noqa: E402
from pipeline.common import UserError, run_main, write_json  # noqa: E402
from pipeline.examples import read_examples, select_rows  # noqa: E402
from pipeline.generate import Generation, generate, length_sorted_batches, load_model, stop_token_ids  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import load_params  # noqa: E402

log = logging.getLogger("bench")
VARIANTS = ("bf16", "prefill8", "threads1", "library", "default")


@dataclass
class Run:
    label: str
    texts: list[str]
    seconds: float
    cpu_seconds: float
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    precision: str = "fp32"
    new_tokens: list[int] | None = None


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


def run_notebook_way(model, tokenizer, prompts: list[str]) -> tuple[Run, int]:
    """One prompt at a time through a text-generation pipeline; (run, its max_new_tokens)."""
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
    return Run("notebook way", texts, time.perf_counter() - started, time.process_time() - cpu), budget


def run_ours(label: str, model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             prefill_batch: int = 1, precision: str = "fp32") -> Run:
    cpu = time.process_time()
    gen: Generation = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               prefill_batch=prefill_batch)
    return Run(label, gen.texts, gen.seconds, time.process_time() - cpu, gen.prefill_seconds, gen.decode_seconds,
               precision, [len(ids) for ids in gen.token_ids])


def run_library(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int) -> Run:
    """transformers' batched generate: the same length-sorted batches, left-padded, greedy, the same stop ids."""
    import torch
    from tqdm import tqdm

    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokenizer.padding_side = "left"
    texts: list[str] = [""] * len(prompts)
    new_tokens = [0] * len(prompts)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode(), tqdm(total=len(prompts), desc="library generate", unit="ex") as bar:
        for batch in length_sorted_batches(lengths, batch_size):
            enc = tokenizer([prompts[i] for i in batch], add_special_tokens=False, padding=True, return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=pad)
            for i, row in zip(batch, out[:, enc["input_ids"].shape[1]:].tolist()):
                end = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
                texts[i] = tokenizer.decode(row[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                new_tokens[i] = end
            bar.update(len(batch))
    return Run("library: transformers generate", texts, time.perf_counter() - started, time.process_time() - cpu,
               new_tokens=new_tokens)


def compare(rows: list[dict], reference: list[str], other: list[str]) -> dict:
    """Row-by-row agreement of `other` with `reference`: verdicts, texts, and the rows that differ."""
    differ, texts, prefix = [], 0, 0
    exact_ref = exact_other = 0
    for row, a, b in zip(rows, reference, other):
        sa, sb = scoring.score_row(row["target_calls"], a), scoring.score_row(row["target_calls"], b)
        exact_ref += sa.exact
        exact_other += sb.exact
        if sa.exact != sb.exact:
            differ.append(row["_line"])
        texts += a == b
        prefix += a != b and (a.startswith(b) or b.startswith(a))
    return {"verdicts_differ": differ, "same_text": texts, "prefix_text": prefix, "exact_reference": exact_ref,
            "exact": exact_other}


def flop_shares(config, lengths: list[int], run: Run, rates: dict[str, float]) -> str:
    """Achieved model FLOP/s of prefill and decode, and their share of the matmul rate of the run's precision."""
    if not run.prefill_seconds or not run.new_tokens:
        return "prefill/decode not timed separately"
    rate = rates.get(run.precision, rates["fp32"])
    pre = prefill_flops(config, lengths) / run.prefill_seconds
    dec = decode_flops(config, lengths, run.new_tokens) / run.decode_seconds if run.decode_seconds else 0.0
    return (f"prefill {run.prefill_seconds:.1f} s at {pre / 1e9:.1f} GFLOP/s = {100 * pre / rate:.0f}% of the {run.precision} "
            f"matmul rate, decode {run.decode_seconds:.1f} s at {dec / 1e9:.1f} GFLOP/s = {100 * dec / rate:.1f}%")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the fetch stage's base model, from dvc.yaml)")
    parser.add_argument("--data", type=Path, help="formatted eval rows (default: the eval stage's, from dvc.yaml)")
    parser.add_argument("--params", default="params.yaml", help="eval.* come from here")
    parser.add_argument("--examples", type=int, default=32, help="rows, evenly spaced over --data as eval.limit picks them")
    parser.add_argument("--batch-size", type=int, help="override eval.batch_size")
    parser.add_argument("--max-new-tokens", type=int, help="override eval.max_new_tokens for our way")
    parser.add_argument("--variants", default="", help=f"comma-separated of {', '.join(VARIANTS)}, or all")
    parser.add_argument("--no-notebook", action="store_true", help="skip the notebook's way (variants only)")
    parser.add_argument("--json", type=Path, help="also write every row's outputs and the figures here")
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise UserError(f"--variants: unknown {unknown}; pick from {', '.join(VARIANTS)} or all")

    import torch
    from transformers import AutoConfig

    from pipeline.hardware import native_bf16

    params = load_params("eval", path=args.params)
    batch_size = args.batch_size or params.batch_size
    budget = args.max_new_tokens or params.max_new_tokens
    args.model = args.model or stage_path("fetch", "--model-dir")
    rows = select_rows(read_examples(args.data or stage_path("eval", "--data")), args.examples)
    prompts = [r["prompt"] for r in rows]
    model, tokenizer = load_model(args.model, precision="fp32")
    config = AutoConfig.from_pretrained(args.model).get_text_config()
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    device = model.device.type
    rates = {"fp32": matmul_rate(device, torch.float32)}
    if native_bf16(device):
        rates["bf16"] = matmul_rate(device, torch.bfloat16)
    threads = torch.get_num_threads()
    print(f"model {args.model}, {len(rows)} rows, prompt tokens median {statistics.median(lengths):.0f} "
          f"(min {min(lengths)}, max {max(lengths)}), device {device}, {threads} torch threads; matmul rate measured now: "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items())
          + f"; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    generate(model, tokenizer, prompts[:1], max_new_tokens=2, batch_size=1, progress=False)  # warm-up, not timed
    report: dict = {"rows": len(rows), "threads": threads, "rates": rates, "runs": []}
    notebook = None
    if not args.no_notebook:
        notebook, notebook_budget = run_notebook_way(model, tokenizer, prompts)
        report.update(notebook_max_new_tokens=notebook_budget, notebook_seconds=notebook.seconds)
        print(f"notebook way: pipeline('text-generation'), one prompt at a time, greedy, max_new_tokens {notebook_budget} "
              f"(the pipeline's default): {len(rows)} rows in {notebook.seconds:.1f} s = {len(rows) / notebook.seconds:.3f} "
              f"examples/s ({notebook.cpu_seconds:.1f} CPU s)", flush=True)

    reference = run_ours("ours (reference: float32, one prompt prefilled at a time)", model, tokenizer, prompts,
                         max_new_tokens=budget, batch_size=batch_size)
    runs = [reference]
    if notebook is not None and notebook_budget != budget:
        runs.append(run_ours(f"ours with the pipeline's budget ({notebook_budget})", model, tokenizer, prompts,
                             max_new_tokens=notebook_budget, batch_size=batch_size))
    for variant in variants:
        if variant == "prefill8":
            runs.append(run_ours("prefill8: 8 prompts prefilled together", model, tokenizer, prompts,
                                 max_new_tokens=budget, batch_size=batch_size, prefill_batch=8))
        elif variant == "threads1":
            torch.set_num_threads(1)
            runs.append(run_ours("threads1: one torch thread", model, tokenizer, prompts, max_new_tokens=budget,
                                 batch_size=batch_size))
            torch.set_num_threads(threads)
        elif variant == "library":
            runs.append(run_library(model, tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size))
        elif variant in ("bf16", "default"):
            precision = "bf16" if variant == "bf16" else params.precision
            other, _ = load_model(args.model, precision=precision)
            used = "bf16" if other.dtype == torch.bfloat16 else "fp32"
            label = ("bf16: weights in bfloat16" if variant == "bf16" else
                     f"default: eval.precision {params.precision} ({used}), eval.prefill_batch {params.prefill_batch}")
            generate(other, tokenizer, prompts[:1], max_new_tokens=2, batch_size=1, progress=False)  # warm-up
            runs.append(run_ours(label, other, tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size,
                                 prefill_batch=params.prefill_batch if variant == "default" else 1, precision=used))
            del other

    n = len(rows)
    print(f"\n| way | seconds | examples/s | x notebook | x reference | verdicts differing from the reference | same text |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        agree = compare(rows, reference.texts, run.texts)
        speed = f"{notebook.seconds / run.seconds:.2f}x" if notebook else "-"
        differ = ", ".join(f"line {x}" for x in agree["verdicts_differ"]) or "none"
        print(f"| {run.label} | {run.seconds:.1f} | {n / run.seconds:.3f} | {speed} | {reference.seconds / run.seconds:.2f}x "
              f"| {len(agree['verdicts_differ'])}/{n} ({differ}) | {agree['same_text']}/{n} |")
        print(f"|   | {flop_shares(config, lengths, run, rates)} | | | | exact matches {agree['exact']} (reference "
              f"{agree['exact_reference']}) | |", flush=True)
        report["runs"].append({"label": run.label, "seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                               "prefill_seconds": run.prefill_seconds, "decode_seconds": run.decode_seconds, **agree,
                               "outputs": [{"eval_line": r["_line"], "text": t} for r, t in zip(rows, run.texts)]})
    if notebook:
        agree = compare(rows, reference.texts, notebook.texts)
        print(f"notebook way vs reference: verdicts differ on {len(agree['verdicts_differ'])}/{n} rows, same text "
              f"{agree['same_text']}/{n} (prefix of one another: {agree['prefix_text']}), exact matches {agree['exact']} "
              f"vs {agree['exact_reference']}")
    print(f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    run_main(main)
