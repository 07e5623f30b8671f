"""Accuracy guard (not a test): does our fast recipe learn what the notebook's recipe learns?

    python bench/recipe_accuracy.py --base models/base --data-dir data/formatted --eval-rows 150

Trains the same base model on the same rows twice, with the same hyperparameters and the
same seed: once the way the notebook runs a step (padded micro-batches, gradient
checkpointing, eager attention, loss from logits of every position, float32 on a CPU:
bench/train_bench.py's `notebook` recipe) and once the way our default does (params.yaml:
sdpa, no checkpointing, output layer on loss positions only, bf16 autocast where the device
has native bf16). Then evaluates both fine-tuned models
on the same held-out rows with the eval stage's code and prints exact match, name accuracy
and argument F1 side by side, plus the per-step losses and training times.

The hyperparameters are the offline demo's (commands/demo.py DEMO_PARAMS: LoRA, lr 1e-3,
90 steps of 2 rows), which learn the task on a CPU in minutes; the notebook's own schedule
(2 epochs of full fine-tuning at lr 1e-5) needs a GPU. What is compared is how a step is
computed, which is what the fast recipe changes. Each recipe runs in its own process.
The guard holds when our exact match is at most 2 points below the notebook recipe's;
the signed difference and the number of rows whose verdict differs are printed too
(at lr 1e-3 with LoRA dropout, two runs differ in many rows: read the gap against that).
Writes only a temporary folder, unless --json is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.common import UserError, read_json, run_main, write_json  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import as_dict, load_params, parse_section  # noqa: E402
from train_bench import NOTEBOOK, model_forward_loss, notebook_precision, run_in_child  # noqa: E402

RECIPES = ("notebook", "ours")


def demo_train_values(base: dict) -> dict:
    """params.yaml's train section with the demo's train.* hyperparameters (not its precision:
    how a step is computed is what the two recipes compare)."""
    from ruamel.yaml import YAML

    from commands.demo import DEMO_PARAMS

    yaml = YAML(typ="safe", pure=True)  # reads each value as `dvc exp run -S` does
    values = json.loads(json.dumps(base))
    for dotted, text in DEMO_PARAMS.items():
        section, *keys = dotted.split(".")
        if section != "train" or keys == ["precision"]:
            continue
        target = values
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = yaml.load(text)
    return values


def recipe_values(recipe: str, demo: dict) -> dict:
    """The demo's hyperparameters, with the notebook's way of running a step for `notebook`."""
    values = json.loads(json.dumps(demo))
    if recipe == "notebook":
        mechanics = {k: v for k, v in NOTEBOOK.items()
                     if k in ("padding_free", "packing", "gradient_checkpointing", "attn_implementation",
                              "skip_prompt_logits", "torch_compile", "optim")}
        values.update(mechanics)
    values.update(eval_rows=0, save_strategy="steps", save_steps=10**6, eval_steps=10**6, logging_steps=1)
    return values


def run_child(spec_path: Path) -> None:
    import gc

    from transformers import AutoTokenizer, TrainerCallback

    from pipeline import scoring
    from pipeline.examples import read_examples, select_rows
    from pipeline.generate import generate, load_model
    from pipeline.hardware import detect_device
    from stages import train

    spec = read_json(spec_path)
    work = Path(spec["work"])
    params = parse_section("train", spec["train"])
    device = detect_device()
    precision, optim = train.plan_hardware(params, device)
    if spec["recipe"] == "notebook" and params.precision == "auto":
        precision = notebook_precision(device)
    tokenizer = AutoTokenizer.from_pretrained(spec["base"])
    data = Path(spec["data_dir"])
    examples, _, _ = train.build_examples(tokenizer, read_examples(data / "train.jsonl"), spec["max_length"])
    config = train.sft_config(params, work / "ck", precision, optim, has_eval=False, use_cpu=device == "cpu",
                              max_length=spec["max_length"], save_strategy="no", disable_tqdm=True)

    class Losses(TrainerCallback):
        def __init__(self):
            self.losses: list[float] = []

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    trainer = train.build_trainer(params, Path(spec["base"]), tokenizer, examples, [], config)
    if spec["recipe"] == "notebook":
        trainer.compute_loss = types.MethodType(model_forward_loss, trainer)
    losses = Losses()
    trainer.add_callback(losses)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    train.save_finetuned(trainer, work / "model", params.lora.enabled)
    del trainer
    gc.collect()

    rows = select_rows(read_examples(data / "eval.jsonl"), spec["eval_rows"])
    model, tokenizer = load_model(work / "model")
    generation = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=spec["max_new_tokens"],
                          batch_size=spec["batch_size"], progress=False)
    scores = [scoring.score_row(r["target_calls"], text) for r, text in zip(rows, generation.texts)]
    write_json(work / "result.json", {
        "recipe": spec["recipe"], "train_seconds": train_seconds, "losses": losses.losses,
        "eval_seconds": generation.seconds, **scoring.summarize(scores),
        "exact_rows": [r["_line"] for r, s in zip(rows, scores) if s.exact]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="base model folder (default: the fetch stage's, from dvc.yaml)")
    parser.add_argument("--data-dir", type=Path, help="formatted train.jsonl + eval.jsonl (default: the format stage's)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--eval-rows", type=int, default=150, help="held-out rows, evenly spaced (0 = all)")
    parser.add_argument("--max-steps", type=int, help="override the demo's train.max_steps (a quick check)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child)
    # absolute: the runs happen in child processes in a temporary folder
    args.base = (args.base or stage_path("fetch", "--model-dir")).resolve()
    args.data_dir = (args.data_dir or stage_path("format", "--out-dir")).resolve()
    for path in (args.base / "config.json", args.data_dir / "train.jsonl", args.data_dir / "eval.jsonl"):
        if not path.exists():
            raise UserError(f"{path} not found: run `dvc repro format` on the demo sources or pass --base/--data-dir")

    demo = demo_train_values(as_dict(load_params("train", path=args.params)))
    if args.max_steps:
        demo["max_steps"] = args.max_steps
    from commands.demo import DEMO_PARAMS

    results = {}
    with tempfile.TemporaryDirectory(prefix="recipe-accuracy-") as tmp:
        for recipe in RECIPES:
            work = Path(tmp) / recipe
            work.mkdir()
            values = recipe_values(recipe, demo)
            parse_section("train", values)  # fail before any training
            spec = {"recipe": recipe, "train": values, "base": str(args.base), "data_dir": str(args.data_dir),
                    "max_length": load_params("format", path=args.params).max_length,
                    "eval_rows": args.eval_rows, "work": str(work),
                    "batch_size": int(DEMO_PARAMS["eval.batch_size"]), "max_new_tokens": int(DEMO_PARAMS["eval.max_new_tokens"])}
            print(f"{recipe}: training {values['max_steps']} steps of {values['per_device_batch_size']} rows "
                  f"(LoRA {values['lora']['enabled']}, lr {values['lr']}, padding_free {values['padding_free']}, "
                  f"checkpointing {values['gradient_checkpointing']}, {values['attn_implementation']}, "
                  f"skip_prompt_logits {values['skip_prompt_logits']}) ... load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
            r = results[recipe] = run_in_child(__file__, spec)
            print(f"  trained in {r['train_seconds']:.0f} s, evaluated {r['rows']} rows in {r['eval_seconds']:.0f} s: "
                  f"exact match {r['exact_match']:.1%}", flush=True)
    a, b = results["notebook"], results["ours"]
    print(f"\n| held-out rows: {a['rows']} | notebook recipe | our fast recipe | difference |\n|---|---|---|---|")
    for key in ("exact_match", "function_name_accuracy", "argument_f1", "normalized_match"):
        print(f"| {key} | {a[key]:.1%} | {b[key]:.1%} | {(b[key] - a[key]) * 100:+.1f} points |")
    print(f"| train seconds | {a['train_seconds']:.0f} | {b['train_seconds']:.0f} | {a['train_seconds'] / b['train_seconds']:.2f}x faster |")
    pairs = list(zip(a["losses"], b["losses"]))
    worst = max(abs(x - y) for x, y in pairs) if pairs else float("nan")
    print(f"per-step loss: first {a['losses'][0]:.4f} vs {b['losses'][0]:.4f}, last {a['losses'][-1]:.4f} vs "
          f"{b['losses'][-1]:.4f}, largest difference over {len(pairs)} steps {worst:.4f}")
    differ = len(set(a["exact_rows"]) ^ set(b["exact_rows"]))
    change = (b["exact_match"] - a["exact_match"]) * 100
    verdict = "holds" if change >= -2 else "FAILS"
    print(f"rows whose exact-match verdict differs: {differ}; ours {change:+.1f} points vs the notebook recipe: "
          f"the guard (ours at most 2 points below) {verdict}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    run_main(main)
