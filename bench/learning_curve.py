"""Learning curve (not a test): how exact match grows with training steps, for the demo's recipe on your rows.

    python bench/learning_curve.py --max-steps 400 --checkpoints 100,200,300,400
    python bench/learning_curve.py --max-steps 300 --checkpoints 100,200,300 --set train.lora.enabled=false --set train.lr=5e-5

One training run of the offline demo's train.* recipe (commands/demo.py DEMO_PARAMS over params.yaml;
`--set train.KEY=VALUE` changes a value, read as `dvc exp run -S` reads it) for --max-steps optimizer
steps, its learning-rate schedule (warmup, cosine) spread over those steps. At each step of
--checkpoints the weights are saved (the adapters, under LoRA); after training each is merged and
judged with the eval stage's code on the rows of --split (default: validation.jsonl, the train rows
`format.validation_rows` holds out, never the held-out eval rows a result is reported on). Prints,
per checkpoint, the rows trained on, the training minutes so far and exact match with its row count
and 95% interval; while training, a line on stderr every 10% of the steps or every minute.

What it answers: how many training minutes a target accuracy takes on this machine, and whether a
longer run still pays. A checkpoint before the last is taken while the learning rate is still above
where a run ending there would have decayed it, so it tends to score below such a run: read the
earlier points as a floor. Writes only a temporary folder, unless --json is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.common import UserError, run_main, write_json  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import as_dict, load_params, parse_section  # noqa: E402
from pipeline.stats import describe_accuracy  # noqa: E402
from recipe_accuracy import apply_overrides  # noqa: E402
from train_bench import add_step_progress  # noqa: E402


def parse_checkpoints(text: str, max_steps: int) -> list[int]:
    """'100,200' -> [100, 200] (sorted, distinct, each in 1..max_steps; max_steps itself is always added)."""
    try:
        steps = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise UserError(f"--checkpoints {text!r}: write optimizer steps separated by commas, e.g. 100,200,300") from None
    bad = sorted(s for s in steps if not 1 <= s <= max_steps)
    if bad:
        raise UserError(f"--checkpoints {text!r}: {bad} outside 1..{max_steps} (--max-steps)")
    return sorted(steps | {max_steps})


def parse_sets(items: list[str]) -> dict[str, str]:
    """['train.lr=5e-5'] -> {'train.lr': '5e-5'}: train.* keys only (the curve trains, nothing else)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("train.") or key == "train.max_steps":
            raise UserError(f"--set {item!r}: write it as train.KEY=VALUE, e.g. --set train.lr=5e-5 "
                            "(the run's length is --max-steps)")
        out[key] = value
    return out


def train_values(params_path: str, sets: dict[str, str], max_steps: int) -> dict:
    """params.yaml's train section with the demo's train.* values, then `sets`, then the curve's own."""
    from commands.demo import DEMO_PARAMS

    values = as_dict(load_params("train", path=params_path))
    apply_overrides(values, {k: v for k, v in DEMO_PARAMS.items() if k.startswith("train.")})
    apply_overrides(values, sets)
    values.update(max_steps=max_steps, eval_rows=0, save_strategy="steps", save_steps=10**6, eval_steps=10**6)
    return values


def train_with_checkpoints(values: dict, base: Path, data_dir: Path, max_length: int, checkpoints: list[int],
                           work: Path) -> tuple[dict[int, dict], int]:
    """Train once, saving the weights at each checkpoint step: ({step: {"folder", "train_seconds", "loss"}},
    the number of train examples trained on)."""
    import gc

    from transformers import AutoTokenizer, TrainerCallback

    from pipeline.examples import read_examples
    from pipeline.hardware import detect_device
    from stages import train

    params = parse_section("train", values)
    device = detect_device()
    precision, optim = train.plan_hardware(params, device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples, _, _ = train.build_examples(tokenizer, read_examples(data_dir / "train.jsonl"), max_length)
    config = train.sft_config(params, work / "ck", precision, optim, has_eval=False, use_cpu=device == "cpu",
                              max_length=max_length, save_strategy="no", disable_tqdm=True)
    saved: dict[int, dict] = {}

    class Checkpoints(TrainerCallback):
        def __init__(self):
            self.started, self.losses = time.perf_counter(), []

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

        def on_step_end(self, args_, state, control, model=None, **kwargs):
            if state.global_step in checkpoints:
                seconds = time.perf_counter() - self.started
                folder = work / f"step-{state.global_step}"
                model.save_pretrained(str(folder))  # the adapters under LoRA, else the whole model
                tokenizer.save_pretrained(str(folder))
                saved[state.global_step] = {"folder": folder, "train_seconds": seconds,
                                            "loss": self.losses[-1] if self.losses else None}
                print(f"  step {state.global_step}: {seconds / 60:.1f} train min, loss "
                      f"{saved[state.global_step]['loss'] or float('nan'):.4f}", flush=True)

    trainer = train.build_trainer(params, base, tokenizer, examples, [], config)
    trainer.add_callback(Checkpoints())
    add_step_progress(trainer)  # a line every 10% of the steps or every minute, to stderr
    print(f"training {params.max_steps} steps of {params.per_device_batch_size} x {params.gradient_accumulation_steps} "
          f"rows ({len(examples)} train rows; LoRA {params.lora.enabled}, lr {params.lr}, {params.lr_scheduler}, "
          f"warmup {params.warmup_ratio}, {precision}, detach_developer_turn {params.detach_developer_turn}) ... "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    trainer.train()
    del trainer
    gc.collect()
    return saved, len(examples)


def merged_folder(checkpoint: Path, base: Path, lora: bool, out: Path) -> Path:
    """A plain model folder for a checkpoint: the adapters merged into the base (LoRA), else the checkpoint."""
    if not lora:
        return checkpoint
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload().save_pretrained(str(out))
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(str(out))
    return out


def judge(folder: Path, rows: list[dict], eval_params) -> dict:
    """Exact match (and the scoring summary) of one model folder on `rows`: the eval stage's own evaluate_model."""
    from pipeline import scoring
    from stages.eval import evaluate_model

    result = evaluate_model(folder, rows, list(range(len(rows))), eval_params.max_new_tokens, eval_params)
    return {**scoring.summarize(result.scores), "eval_seconds": result.generation.seconds}


def curve_lines(points: list[dict], train_rows: int, split: str) -> list[str]:
    """The curve as a markdown table."""
    lines = [f"| step | rows trained on | epochs | train minutes | {split} exact match | loss |", "|---|---|---|---|---|---|"]
    for p in points:
        loss = "" if p["loss"] is None else f"{p['loss']:.4f}"
        lines.append(f"| {p['step']} | {p['rows_seen']} | {p['rows_seen'] / train_rows:.2f} | {p['train_seconds'] / 60:.1f} | "
                     f"{describe_accuracy(p['exact_match'], p['rows'])} | {loss} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="base model folder (default: the fetch stage's, from dvc.yaml)")
    parser.add_argument("--data-dir", type=Path, help="formatted train.jsonl + the split's file (default: the format stage's)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--max-steps", type=int, required=True, help="optimizer steps of the one run (its schedule spans them)")
    parser.add_argument("--checkpoints", default="", help="steps to judge, comma-separated (the last step always is)")
    parser.add_argument("--split", default="validation", choices=("validation", "eval"),
                        help="rows judged: validation.jsonl (format.validation_rows) or eval.jsonl")
    parser.add_argument("--rows", type=int, default=0, help="judge N rows of the split, evenly spaced (0 = all)")
    parser.add_argument("--set", action="append", default=[], metavar="train.KEY=VALUE", help="change a train value")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps}: train at least one step")
    checkpoints = parse_checkpoints(args.checkpoints, args.max_steps)
    values = train_values(args.params, parse_sets(args.set), args.max_steps)
    parse_section("train", values)  # a wrong --set fails before anything loads
    base = (args.base or stage_path("fetch", "--model-dir")).resolve()
    data_dir = (args.data_dir or stage_path("format", "--out-dir")).resolve()
    judged = data_dir / f"{args.split}.jsonl"
    for path in (base / "config.json", data_dir / "train.jsonl"):
        if not path.exists():
            raise UserError(f"{path} not found: run `dvc repro format` or pass --base/--data-dir")
    if not judged.exists() or not judged.read_text(encoding="utf-8").strip():
        raise UserError(f"{judged} {'holds no rows' if judged.exists() else 'not found'}: hold validation rows out of "
                        "train (set format.validation_rows, e.g. 60, in params.yaml and run `dvc repro format`), "
                        "or pass --split eval")

    from pipeline.examples import read_examples, select_rows

    rows = select_rows(read_examples(judged), args.rows)
    eval_params = load_params("eval", path=args.params)
    points = []
    with tempfile.TemporaryDirectory(prefix="learning-curve-") as tmp:
        saved, train_rows = train_with_checkpoints(values, base, data_dir, load_params("format", path=args.params).max_length,
                                       checkpoints, Path(tmp))
        rows_per_step = values["per_device_batch_size"] * values["gradient_accumulation_steps"]
        for step in checkpoints:
            folder = merged_folder(saved[step]["folder"], base, values["lora"]["enabled"], Path(tmp) / f"merged-{step}")
            result = judge(folder, rows, eval_params)
            shutil.rmtree(folder, ignore_errors=True)
            points.append({"step": step, "rows_seen": step * rows_per_step, "train_seconds": saved[step]["train_seconds"],
                           "loss": saved[step]["loss"], **result})
            print(f"  step {step}: {describe_accuracy(result['exact_match'], result['rows'])} "
                  f"(judged in {result['eval_seconds']:.0f} s)", flush=True)
    print()
    print("\n".join(curve_lines(points, train_rows, args.split)))
    if args.json:
        write_json(args.json, {"train": values, "split": args.split, "train_rows": train_rows, "points": points})


if __name__ == "__main__":
    run_main(main)
