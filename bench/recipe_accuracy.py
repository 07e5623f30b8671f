"""Accuracy guard (not a test): does our fast recipe learn what the notebook's recipe learns?

    python bench/recipe_accuracy.py --base models/base --data-dir data/formatted --eval-rows 150 --seeds 3

Trains the same base model on the same rows with the same hyperparameters, for each of K seeds
(`--seeds K`: train.seed, train.seed + 1, ...): once the way the notebook runs a step (padded
micro-batches, gradient checkpointing, eager attention, loss from logits of every position,
float32 on a CPU: bench/train_bench.py's `notebook` recipe) and once the way our default does
(params.yaml: sdpa, no checkpointing, output layer on loss positions only, bf16 autocast where
the device has native bf16), the two recipes alternating seed by seed. Then evaluates every
fine-tuned model on the same held-out rows with the eval stage's code and compares the two
distributions: each recipe's mean exact match over its seeds and the spread between seeds
(standard deviation, min-max), the difference of the means with a 95% interval over rows
(pipeline.stats.seeded_difference: each row's share of right runs, paired row by row), and for
each seed the paired comparison of the two recipes' runs (rows fixed and broken, Newcombe's
interval, McNemar p); name accuracy, argument F1, losses and training times beside them.

The hyperparameters are the offline demo's (commands/demo.py DEMO_PARAMS: LoRA, lr 1e-3,
135 steps of 2 rows; `--max-steps` shortens the run: the notebook recipe took 14-24 s a step on the
2-core CPU, bench/RESULTS.md), which learn the task on a CPU in minutes; the notebook's own schedule
(2 epochs of full fine-tuning at lr 1e-5) needs a GPU. What is compared is how a step is
computed, which is what the fast recipe changes. Each recipe runs in its own process, whose progress
comes to stderr as it happens, prefixed `[ours seed 43]`: a training line every 10% of the steps or every
minute (step, loss, time so far and left), then the eval's rows done.
The guard holds when our mean exact match is at most 2 points below the notebook recipe's
(GUARD_POINTS); with one seed per recipe a gap is read against nothing, so the spread between
seeds and the interval are printed beside it (at lr 1e-3 with LoRA dropout, two runs of one
recipe differ in many rows). Writes only a temporary folder, unless --json is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
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
from pipeline.stats import paired_difference, seeded_difference  # noqa: E402
from train_bench import NOTEBOOK, add_step_progress, model_forward_loss, notebook_precision, run_in_child  # noqa: E402

log = logging.getLogger("bench")
RECIPES = ("notebook", "ours")
GUARD_POINTS = 2.0  # ours may fall at most this far below the notebook recipe's mean exact match, points
SIDE_BY_SIDE = ("exact_match", "function_name_accuracy", "argument_f1", "normalized_match")


def apply_overrides(values: dict, overrides: dict[str, str]) -> None:
    """Set `section.key.sub` = text (read as `dvc exp run -S` reads it) in a section's values, in place."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    for dotted, text in overrides.items():
        _section, *keys = dotted.split(".")
        target = values
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                raise UserError(f"{dotted}: params.yaml has no section {key!r} there")
            target = target[key]
        target[keys[-1]] = yaml.load(text)  # an unknown last key is parse_section's error


def demo_train_values(base: dict) -> dict:
    """params.yaml's train section with the demo's train.* hyperparameters (not its precision:
    how a step is computed is what the two recipes compare)."""
    from commands.demo import DEMO_PARAMS

    values = json.loads(json.dumps(base))
    apply_overrides(values, {k: v for k, v in DEMO_PARAMS.items() if k.startswith("train.") and k != "train.precision"})
    return values


def recipe_values(recipe: str, demo: dict, seed: int | None = None) -> dict:
    """The demo's hyperparameters, with the notebook's way of running a step for `notebook` (and `seed` as train.seed)."""
    values = json.loads(json.dumps(demo))
    if seed is not None:
        values["seed"] = seed
    if recipe == "notebook":
        mechanics = {k: v for k, v in NOTEBOOK.items()
                     if k in ("padding_free", "packing", "gradient_checkpointing", "attn_implementation",
                              "skip_prompt_logits", "detach_developer_turn", "torch_compile", "optim")}
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
    add_step_progress(trainer)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    train.save_finetuned(trainer, work / "model", params.lora.enabled)
    del trainer
    gc.collect()

    rows = select_rows(read_examples(data / "eval.jsonl"), spec["eval_rows"])
    log.info("trained in %.0f s; evaluating %d held-out rows", train_seconds, len(rows))
    model, tokenizer = load_model(work / "model")
    generation = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=spec["max_new_tokens"],
                          batch_size=spec["batch_size"])  # its bar: rows done / total, time so far and left
    scores = [scoring.score_row(r["target_calls"], text) for r, text in zip(rows, generation.texts)]
    write_json(work / "result.json", {
        "recipe": spec["recipe"], "seed": params.seed, "precision": precision, "train_seconds": train_seconds,
        "losses": losses.losses, "eval_seconds": generation.seconds, **scoring.summarize(scores),
        "eval_lines": [r["_line"] for r in rows], "exact": [s.exact for s in scores]})


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def compare_recipes(runs: dict[str, list[dict]]) -> dict:
    """The two recipes' runs (one per seed, in seed order; each with `seed`, per-row `exact` on the same rows
    and the scoring summary) compared: per recipe the spread of each SIDE_BY_SIDE metric and of the train
    time over seeds; the difference of the mean exact match with its interval over rows; per seed the
    paired comparison of the two runs; and the guard's verdict."""
    a, b = runs["notebook"], runs["ours"]
    if [r["seed"] for r in a] != [r["seed"] for r in b]:
        raise ValueError("both recipes need one run per seed, the same seeds")
    if any(r["eval_lines"] != a[0]["eval_lines"] for r in a + b):
        raise ValueError("every run must be evaluated on the same rows")
    out: dict = {"seeds": [r["seed"] for r in a], "rows": len(a[0]["exact"])}
    for recipe, recipe_runs in runs.items():
        out[recipe] = {key: spread([r[key] for r in recipe_runs]) for key in (*SIDE_BY_SIDE, "train_seconds")}
    d = seeded_difference([r["exact"] for r in a], [r["exact"] for r in b])
    out["difference"] = {"exact_match": d.difference, "ci_low": d.ci_low, "ci_high": d.ci_high}
    out["per_seed"] = []
    for ra, rb in zip(a, b):
        pd = paired_difference(ra["exact"], rb["exact"])
        out["per_seed"].append({"seed": ra["seed"], "notebook": pd.accuracy_a, "ours": pd.accuracy_b, "fixed": pd.fixed,
                                "broken": pd.broken, "ci_low": pd.ci_low, "ci_high": pd.ci_high, "p_value": pd.p_value})
    out["guard_holds"] = 100 * d.difference >= -GUARD_POINTS
    return out


def comparison_lines(c: dict) -> list[str]:
    """The comparison as the markdown table and lines the guard prints."""
    k = len(c["seeds"])
    nb, ours = c["notebook"], c["ours"]
    lines = [f"| held-out rows: {c['rows']}, seeds: {', '.join(map(str, c['seeds']))} | notebook recipe | our fast recipe "
             "| difference |", "|---|---|---|---|"]
    for key in SIDE_BY_SIDE:
        lines.append(f"| {key}, mean of {k} | {nb[key]['mean']:.1%} | {ours[key]['mean']:.1%} | "
                     f"{100 * (ours[key]['mean'] - nb[key]['mean']):+.1f} points |")
    d = c["difference"]
    lines.append(f"| exact_match, 95% interval over rows | | | [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}] points |")
    lines.append(f"| exact_match, spread over seeds (sd; min-max) | {100 * nb['exact_match']['sd']:.1f} "
                 f"({nb['exact_match']['min']:.1%}-{nb['exact_match']['max']:.1%}) | {100 * ours['exact_match']['sd']:.1f} "
                 f"({ours['exact_match']['min']:.1%}-{ours['exact_match']['max']:.1%}) | |")
    lines.append(f"| train seconds, mean | {nb['train_seconds']['mean']:.0f} | {ours['train_seconds']['mean']:.0f} | "
                 f"{nb['train_seconds']['mean'] / ours['train_seconds']['mean']:.2f}x faster |")
    for s in c["per_seed"]:
        lines.append(f"seed {s['seed']}: notebook {s['notebook']:.1%}, ours {s['ours']:.1%}: {s['fixed']} rows fixed, "
                     f"{s['broken']} broken, 95% interval [{100 * s['ci_low']:+.1f}, {100 * s['ci_high']:+.1f}] points, "
                     f"McNemar p = {s['p_value']:.3g}")
    lines.append(f"ours {100 * d['exact_match']:+.1f} points vs the notebook recipe (mean of {k} seed(s) each): the guard "
                 f"(ours at most {GUARD_POINTS:g} points below) {'holds' if c['guard_holds'] else 'FAILS'}"
                 + ("" if k > 1 else "; one seed per recipe says nothing of run-to-run noise: use --seeds 3"))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="base model folder (default: the fetch stage's, from dvc.yaml)")
    parser.add_argument("--data-dir", type=Path, help="formatted train.jsonl + eval.jsonl (default: the format stage's)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--eval-rows", type=int, default=150, help="held-out rows, evenly spaced (0 = all)")
    parser.add_argument("--max-steps", type=int, help="override the demo's train.max_steps (a quick check)")
    parser.add_argument("--seeds", type=int, default=1, help="train each recipe with K seeds: train.seed, +1, ... (default 1)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child)
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: train each recipe at least once (--seeds 1), or 3 to see the noise")
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

    seeds = [demo["seed"] + i for i in range(args.seeds)]
    runs: dict[str, list[dict]] = {recipe: [] for recipe in RECIPES}
    with tempfile.TemporaryDirectory(prefix="recipe-accuracy-") as tmp:
        for seed in seeds:  # the recipes alternate, so a slow spell of the machine hits both
            for recipe in RECIPES:
                work = Path(tmp) / f"{recipe}-{seed}"
                work.mkdir()
                values = recipe_values(recipe, demo, seed)
                parse_section("train", values)  # fail before any training
                spec = {"recipe": recipe, "train": values, "base": str(args.base), "data_dir": str(args.data_dir),
                        "max_length": load_params("format", path=args.params).max_length,
                        "eval_rows": args.eval_rows, "work": str(work),
                        "batch_size": int(DEMO_PARAMS["eval.batch_size"]), "max_new_tokens": int(DEMO_PARAMS["eval.max_new_tokens"])}
                print(f"{recipe}, seed {seed}: training {values['max_steps']} steps of {values['per_device_batch_size']} rows "
                      f"(LoRA {values['lora']['enabled']}, lr {values['lr']}, padding_free {values['padding_free']}, "
                      f"checkpointing {values['gradient_checkpointing']}, {values['attn_implementation']}, "
                      f"skip_prompt_logits {values['skip_prompt_logits']}, detach_developer_turn "
                      f"{values['detach_developer_turn']}) ... load average "
                      f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
                r = run_in_child(__file__, spec, f"{recipe} seed {seed}")
                runs[recipe].append(r)
                print(f"  trained in {r['train_seconds']:.0f} s ({r['precision']}), evaluated {r['rows']} rows in "
                      f"{r['eval_seconds']:.0f} s: exact match {r['exact_match']:.1%}", flush=True)
    comparison = compare_recipes(runs)
    print()
    print("\n".join(comparison_lines(comparison)))
    for seed, a, b in zip(seeds, runs["notebook"], runs["ours"]):
        pairs = list(zip(a["losses"], b["losses"]))
        worst = max(abs(x - y) for x, y in pairs) if pairs else float("nan")
        print(f"seed {seed}, per-step loss: first {a['losses'][0]:.4f} vs {b['losses'][0]:.4f}, last {a['losses'][-1]:.4f} "
              f"vs {b['losses'][-1]:.4f}, largest difference over {len(pairs)} steps {worst:.4f}")
    if args.json:
        write_json(args.json, {"runs": runs, "comparison": comparison})


if __name__ == "__main__":
    run_main(main)
