"""Benchmark (not a test): training speed of the notebook's recipe vs our default, side by side.

    python bench/train_bench.py --model models/base --data data/formatted/train.jsonl --grad-accum 1
    python bench/train_bench.py --synthetic --steps 10 --rounds 2          # a GPU: random-init 270M, ~650-token rows
    python bench/train_bench.py ... --ablation                              # also each change on its own

Every run trains the same model on the same examples, in the same order (same seed), for
`--warmup` + `--steps` optimizer steps, in a child process of its own (so each run's peak
memory is its own); runs alternate between recipes for `--rounds` rounds. Only the `--steps`
steps after the warm-up are timed. For each recipe it prints train tokens/s (real tokens:
pad tokens are not counted), samples/s, peak memory, the loss of each step (the recipes
learn the same thing per step: the losses agree), and the ratio to the notebook's recipe.

Recipes (train params on top of params.yaml's `train:` section):
- notebook: Google's notebook exactly: micro-batches padded to their longest example,
  gradient checkpointing, eager attention, the loss from the model's own forward with
  `labels` (logits for every position through the 262k-word output layer, as the TRL of the
  notebook computed it; today's TRL would use its fused LM head), fused AdamW; on a GPU the
  weights in bf16 (the checkpoint's dtype, as the notebook's `dtype="auto"` loads them) with
  bf16=True; on a CPU float32 (the offline base's dtype).
- ours: params.yaml's `train:` section as it is (the pipeline's default recipe; `precision:
  auto` is bf16 autocast over float32 weights where the device has native bf16, this CPU too).
- ours+detach_developer_turn (with --only): ours with train.detach_developer_turn, the developer
  turn run into a KV cache without gradient (in bf16 where it is native).
- with --ablation: the notebook recipe plus one change each (padding-free, output layer on
  loss positions only, no gradient checkpointing, sdpa attention, torch.compile, bf16 autocast).
`--batch-size` and `--grad-accum` set the micro-batch and accumulation of every recipe (default:
the notebook's 4 x 8); the learning rate and schedule are params.yaml's for all.

Data: `--model`/`--data` (a model folder and a formatted train.jsonl: the CPU run uses the
offline 270M), or `--synthetic`: a randomly initialised model of the exact FunctionGemma 270M
configuration and random token rows of realistic length (600-700 tokens, the last 30-50 of
them the completion), since speed does not depend on the weights and a GPU machine may have
no network. It measures this machine's dense matmul rate in the same run (float32, and bf16
where the device computes it natively: a GPU, a CPU with AVX512-BF16/AMX) and prints each
recipe's achieved model FLOP/s and its share of the rate of its precision (on a GPU: the MFU).
Writes nothing but a temporary folder, unless --json is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.common import UserError, read_json, run_main, write_json  # noqa: E402
from flops import matmul_rate, train_flops_per_token  # noqa: E402
from pipeline.layout import stage_path  # noqa: E402
from pipeline.params import TrainParams, as_dict, load_params, parse_section  # noqa: E402

log = logging.getLogger("bench")
PROGRESS_PARTS = 10  # a child run says where it is every 10% of its steps ...
PROGRESS_SECONDS = 60  # ... or every minute, whichever comes first (a 20-minute run: about 20 lines)
TAIL_CHARS = 3000  # of a failed child's output, in the error

# FunctionGemma 270M = Gemma 3 270M's architecture (config.json of google/functiongemma-270m-it).
GEMMA3_270M = dict(
    vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3, max_position_embeddings=32768,
    rope_parameters={"full_attention": {"rope_theta": 1_000_000.0, "rope_type": "default"},
                     "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"}},
    rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
    pad_token_id=0, eos_token_id=1, bos_token_id=2,
)
TINY = dict(GEMMA3_270M, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16, query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"])  # for the benchmark's own smoke test

NOTEBOOK = dict(per_device_batch_size=4, gradient_accumulation_steps=8, optim="adamw_torch_fused", packing=False,
                padding_free=False, gradient_checkpointing=True, attn_implementation="eager", skip_prompt_logits=False,
                detach_developer_turn=False, torch_compile=False, loss_type="nll", precision="auto",
                lora={"enabled": False})
# One change each, on top of the notebook's recipe.
ABLATIONS = {
    "+padding_free": dict(padding_free=True),
    "+skip_prompt_logits": dict(skip_prompt_logits=True),
    "-gradient_checkpointing": dict(gradient_checkpointing=False),
    "+sdpa": dict(attn_implementation="sdpa"),
    "+torch_compile": dict(torch_compile=True),
    "+bf16": dict(precision="bf16"),  # bf16 autocast (on a GPU the notebook already runs bf16)
}
# Options of ours that params.yaml leaves off, each on top of ours.
OURS_OPTIONS = {
    "ours+detach_developer_turn": dict(detach_developer_turn=True),  # the developer turn into a KV cache, no gradient
}


def is_ours(recipe: str) -> bool:
    """ours or one of its options (they run a step our way, not the notebook's)."""
    return recipe == "ours" or recipe in OURS_OPTIONS


def recipe_params(name: str, base: dict, batch_size: int | None, grad_accum: int | None) -> TrainParams:
    """The train params of one recipe (validated like params.yaml)."""
    values = dict(base)
    if name in OURS_OPTIONS:
        values.update(OURS_OPTIONS[name])
    elif name != "ours":
        for key, value in NOTEBOOK.items():
            values[key] = dict(values[key], **value) if isinstance(value, dict) else value
        values.update(ABLATIONS.get(name, {}))
    if batch_size:
        values["per_device_batch_size"] = batch_size
    if grad_accum:
        values["gradient_accumulation_steps"] = grad_accum
    return parse_section("train", values)


def synthetic_examples(count: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Random token rows of Mobile Actions length: 600-700 tokens, the last 30-50 the completion."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        length, completion = rng.randint(600, 700), rng.randint(30, 50)
        ids = [2] + [rng.randrange(256, vocab_size) for _ in range(length - 1)]
        examples.append({"input_ids": ids, "completion_mask": [0] * (length - completion) + [1] * completion})
    return examples


def synthetic_model(folder: Path, config_values: dict) -> Path:
    """A random-init Gemma 3 model of the given configuration, with a minimal tokenizer (pad/eos/bos/unk)."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    torch.manual_seed(0)
    Gemma3ForCausalLM(Gemma3TextConfig(**config_values)).save_pretrained(folder)
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- one run (child process)


def notebook_precision(device: str) -> str:
    """The notebook trains in the dtype the weights load in (`dtype="auto"`): bf16 for the hub's
    bf16 checkpoint on a GPU; the offline base is float32, and on a CPU it runs float32."""
    import torch

    return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def model_forward_loss(trainer, model, inputs, return_outputs=False, num_items_in_batch=None):
    """The notebook's loss: the model's forward with labels (logits for every position, then
    transformers' causal-LM cross-entropy over the labelled ones), instead of TRL's fused head."""
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    outputs = model(**{k: inputs[k] for k in keys if k in inputs}, use_cache=False, num_items_in_batch=num_items_in_batch)
    return (outputs.loss, outputs) if return_outputs else outputs.loss


def duration(seconds: float) -> str:
    """'45 s' under two minutes, else '6.9 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def progress_due(step: int, total: int, last_step: int, seconds_since: float) -> bool:
    """Whether a run at optimizer step `step` of `total` says so: on its first and last step, when
    PROGRESS_PARTS-th of the steps or PROGRESS_SECONDS have passed since the line at `last_step`."""
    return (step in (1, total) or step - last_step >= max(total // PROGRESS_PARTS, 1)
            or seconds_since >= PROGRESS_SECONDS)


def progress_line(step: int, total: int, loss: float | None, seconds: float) -> str:
    """'step 40/135 (30%), loss 1.2345, 2.6 min so far, about 6.1 min left' (the time left at the pace so far)."""
    loss_text = "-" if loss is None else f"{loss:.4f}"
    return (f"step {step}/{total} ({step / total:.0%}), loss {loss_text}, {duration(seconds)} so far, "
            f"about {duration(seconds / step * (total - step))} left")


def add_step_progress(trainer) -> None:
    """Log progress_line (to stderr, through `logging`) when progress_due, in place of the per-log dict
    transformers prints with its bar disabled (every logging step, to stdout)."""
    from transformers import PrinterCallback, TrainerCallback

    class StepProgress(TrainerCallback):
        def on_train_begin(self, args_, state, control, **kwargs):
            self.started = self.last_time = time.perf_counter()
            self.last_step, self.loss, self.waiting = 0, None, False

        def on_step_end(self, args_, state, control, **kwargs):
            now = time.perf_counter()
            if progress_due(state.global_step, state.max_steps, self.last_step, now - self.last_time):
                self.last_step, self.last_time = state.global_step, now
                if control.should_log:  # this step's loss comes to on_log, right after
                    self.waiting = True
                else:
                    self.say(state)

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]
                if self.waiting:
                    self.say(state)

        def say(self, state):
            self.waiting = False
            log.info(progress_line(state.global_step, state.max_steps, self.loss, time.perf_counter() - self.started))

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepProgress())


def run_child(args: argparse.Namespace) -> None:
    import resource

    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from pipeline.hardware import detect_device
    from stages import train

    spec = read_json(args.child)
    params = parse_section("train", spec["params"])
    device = detect_device()
    precision, optim = train.plan_hardware(params, device)
    model_dtype = None
    if not is_ours(spec["recipe"]) and params.precision == "auto":
        precision = notebook_precision(device)
        if precision == "bf16":
            model_dtype = torch.bfloat16  # the notebook loads the bf16 checkpoint as it is
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    examples = [json.loads(line) for line in Path(spec["examples"]).read_text().splitlines()]
    steps = spec["warmup"] + spec["steps"]
    config = train.sft_config(params, Path(spec["work"]) / "ck", precision, optim, has_eval=False, use_cpu=device == "cpu",
                              max_length=spec["max_length"], max_steps=steps, save_strategy="no", logging_steps=1,
                              disable_tqdm=True, dataloader_num_workers=0)

    class Recorder(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []

        def _sync(self):
            if device == "cuda":
                torch.cuda.synchronize()

        def on_step_begin(self, args_, state, control, **kwargs):
            self._sync()
            self.start, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args_, state, control, **kwargs):
            self._sync()
            self.steps.append({"seconds": time.perf_counter() - self.start,
                               "tokens": state.num_input_tokens_seen - self.tokens})

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.steps:
                self.steps[-1]["loss"] = logs["loss"]

    trainer = train.build_trainer(params, Path(spec["model"]), tokenizer, examples, [], config, model_dtype=model_dtype)
    if not is_ours(spec["recipe"]) and not params.skip_prompt_logits:
        trainer.compute_loss = types.MethodType(model_forward_loss, trainer)
    recorder = Recorder()
    trainer.add_callback(recorder)
    add_step_progress(trainer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = recorder.steps[spec["warmup"]:]
    seconds, tokens = sum(s["seconds"] for s in timed), sum(s["tokens"] for s in timed)
    samples = len(timed) * params.per_device_batch_size * params.gradient_accumulation_steps
    memory = (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    result = {"recipe": spec["recipe"], "device": device, "precision": precision, "optim": optim,
              "weights": str(model_dtype or torch.float32).removeprefix("torch."),
              "steps": len(timed), "seconds": seconds, "tokens": tokens, "samples": samples,
              "tokens_per_second": tokens / seconds, "samples_per_second": samples / seconds,
              "peak_memory_gb": memory, "losses": [s.get("loss") for s in recorder.steps],
              "step_seconds": [s["seconds"] for s in recorder.steps]}
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    write_json(Path(spec["work"]) / "result.json", result)


# ---------------------------------------------------------------- the comparison (parent)


def prepare_data(args: argparse.Namespace, work: Path, needed: int, max_length: int) -> tuple[Path, Path, str]:
    """(model folder, examples file, description) for the runs."""
    from pipeline.examples import read_examples
    from stages import train

    if args.synthetic:
        config = TINY if args.tiny else GEMMA3_270M
        model = synthetic_model(work / "model", config)
        examples = synthetic_examples(needed, config["vocab_size"])
        what = f"random-init {'tiny Gemma 3' if args.tiny else 'FunctionGemma 270M configuration'}, {needed} synthetic rows"
    else:
        from transformers import AutoTokenizer

        model = args.model
        if not (model / "config.json").exists():
            raise UserError(f"{model} is not a model folder: run `dvc repro fetch` or pass --model (or use --synthetic)")
        rows = read_examples(args.data)
        tokenizer = AutoTokenizer.from_pretrained(model)
        examples, _, _ = train.build_examples(tokenizer, rows[: max(needed, 1)], max_length)
        if len(examples) < needed:
            raise UserError(f"{args.data} has {len(examples)} usable rows; the runs need {needed}: lower --steps or --batch-size")
        what = f"{model}, first {needed} rows of {args.data}"
    lengths = [len(e["input_ids"]) for e in examples]
    completion = [sum(e["completion_mask"]) for e in examples]
    what += f" (tokens per row: mean {statistics.mean(lengths):.0f}, completion mean {statistics.mean(completion):.0f})"
    path = work / "examples.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return model, path, what


def machine_rates(device: str) -> dict[str, float]:
    """This machine's dense matmul FLOP/s now: float32, and bf16 where the device computes it natively."""
    import torch

    from pipeline.hardware import native_bf16

    rates = {"fp32": matmul_rate(device, torch.float32)} if device != "cuda" else {}
    if native_bf16(device):
        rates["bf16"] = matmul_rate(device, torch.bfloat16)
    return rates


def rate_key(result: dict) -> str:
    """Which matmul rate a run is held against: bf16 for bf16 autocast or bf16 weights, else float32."""
    return "bf16" if result["precision"] == "bf16" or result["weights"] == "bfloat16" else "fp32"


def recipe_flops(model: Path, examples: Path, params: dict[str, TrainParams]) -> dict[str, float]:
    """Model FLOPs per real token of each recipe on these examples (bench/flops.py)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    rows = [json.loads(line) for line in examples.read_text().splitlines()]
    lengths = [len(r["input_ids"]) for r in rows]
    completion = sum(sum(r["completion_mask"]) for r in rows) / sum(lengths)
    return {name: train_flops_per_token(config, statistics.mean(lengths), completion, p.lora.enabled)
            for name, p in params.items()}


def run_in_child(script: str, spec: dict, label: str | None = None) -> dict:
    """Run `script --child spec.json` in a fresh process in spec["work"]; its result.json.

    A process per run gives each its own peak memory and no state left by the one before. The child's
    output (stdout and stderr, one stream) goes to this process's stderr as it comes, each line prefixed
    with `label` (default: the recipe); its progress bars refresh once a minute (TQDM_* set the defaults
    of every tqdm bar in the child; a pipe would get a line per refresh). A child that fails raises with
    the last TAIL_CHARS of its output.
    """
    work = Path(spec["work"])
    write_json(work / "spec.json", spec)
    prefix = f"  [{label or spec['recipe']}] "
    env = {"TQDM_MININTERVAL": str(PROGRESS_SECONDS), "TQDM_MAXINTERVAL": str(PROGRESS_SECONDS), **os.environ,
           "PYTHONUNBUFFERED": "1"}  # the user's own TQDM_* win; unbuffered: print()s come out when they happen
    tail, previous = "", None
    # text mode reads "\r" as a line end: each refresh of a progress bar is a line
    with subprocess.Popen([sys.executable, script, "--child", str(work / "spec.json")], cwd=work, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            tail = (tail + line)[-TAIL_CHARS:]
            line = line.rstrip()
            if line and line != previous:  # a bar closing repeats its last refresh
                print(prefix + line, file=sys.stderr, flush=True)
            previous = line
    if proc.returncode:
        raise RuntimeError(f"recipe {spec['recipe']} failed:\n{tail}")
    return read_json(work / "result.json")


def run_one(recipe: str, params: TrainParams, model: Path, examples: Path, args: argparse.Namespace, work: Path,
            max_length: int, label: str) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{recipe.strip('+-')}-", dir=work))
    started = time.perf_counter()
    result = run_in_child(__file__, {"recipe": recipe, "params": as_dict(params), "model": str(model),
                                     "examples": str(examples), "warmup": args.warmup, "steps": args.steps,
                                     "work": str(run_dir), "max_length": max_length}, label)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def summarize(results: list[dict], recipes: list[str]) -> list[dict]:
    rows = []
    base = None
    for recipe in recipes:
        runs = [r for r in results if r["recipe"] == recipe]
        tps = statistics.median(r["tokens_per_second"] for r in runs)
        row = {"recipe": recipe, "runs": len(runs), "tokens_per_second": tps,
               "samples_per_second": statistics.median(r["samples_per_second"] for r in runs),
               "peak_memory_gb": max(r["peak_memory_gb"] for r in runs),
               "losses": runs[0]["losses"], "precision": runs[0]["precision"], "weights": runs[0]["weights"],
               "flops_per_second": statistics.median(r["flops_per_second"] for r in runs),
               "share_of_matmul_rate": statistics.median(r["share_of_matmul_rate"] for r in runs)}
        base = base or tps
        row["ratio"] = tps / base
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="base model folder (default: the fetch stage's, from dvc.yaml)")
    parser.add_argument("--data", type=Path, help="formatted train rows (default: train.jsonl of the format stage's output)")
    parser.add_argument("--params", default="params.yaml", help="the train section `ours` runs (and lr/schedule of all)")
    parser.add_argument("--synthetic", action="store_true", help="random-init 270M and random rows (the GPU benchmark)")
    parser.add_argument("--tiny", action="store_true", help="with --synthetic: a tiny model (the benchmark's own smoke test)")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each recipe")
    parser.add_argument("--batch-size", type=int, help="micro-batch of every recipe (default: the notebook's 4)")
    parser.add_argument("--grad-accum", type=int, help="accumulation of every recipe (default: the notebook's 8)")
    parser.add_argument("--ablation", action="store_true", help="also run the notebook recipe plus each change alone")
    parser.add_argument("--only", help="comma-separated recipes to run (notebook, ours, or ablation names)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise UserError("--steps and --rounds must be at least 1, --warmup at least 0")

    if not args.synthetic:  # absolute: the runs happen in child processes in a temporary folder
        args.model = (args.model or stage_path("fetch", "--model-dir")).resolve()
        args.data = (args.data or stage_path("format", "--out-dir") / "train.jsonl").resolve()
    base = as_dict(load_params("train", path=args.params))
    max_length = load_params("format", path=args.params).max_length
    recipes = ["notebook", "ours"] + (list(ABLATIONS) if args.ablation else [])
    if args.only:
        recipes = [r for r in args.only.split(",") if r]
        unknown = set(recipes) - {"notebook", "ours", *ABLATIONS, *OURS_OPTIONS}
        if unknown:
            raise UserError(f"--only: unknown recipes {sorted(unknown)}; pick from notebook, ours, "
                            f"{', '.join([*ABLATIONS, *OURS_OPTIONS])}")
    params = {name: recipe_params(name, base, args.batch_size, args.grad_accum) for name in recipes}
    per_step = {name: p.per_device_batch_size * p.gradient_accumulation_steps for name, p in params.items()}
    if len(set(per_step.values())) > 1:
        raise UserError(f"the recipes would see different sequences per step ({per_step}): set --batch-size and --grad-accum")
    needed = next(iter(per_step.values())) * (args.warmup + args.steps)

    import torch

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        model, examples, what = prepare_data(args, work, needed, max_length)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"{what}; {next(iter(per_step.values()))} sequences per optimizer step "
              f"({params[recipes[0]].per_device_batch_size} x {params[recipes[0]].gradient_accumulation_steps}); "
              f"{args.warmup} warm-up + {args.steps} timed steps per run, {args.rounds} rounds; device "
              f"{torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'} "
              f"({os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})", flush=True)
        rates = machine_rates(device)
        print("matmul rate measured now: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()), flush=True)
        per_token = recipe_flops(model, examples, params)
        results = []
        for round_ in range(args.rounds):
            for recipe in recipes if round_ % 2 == 0 else recipes[::-1]:
                result = run_one(recipe, params[recipe], model, examples, args, work, max_length,
                                 f"{recipe} round {round_ + 1}")
                result["flops_per_second"] = result["tokens_per_second"] * per_token[recipe]
                result["share_of_matmul_rate"] = result["flops_per_second"] / rates[rate_key(result)]
                results.append(result)
                print(f"  round {round_ + 1} {recipe:24s} {result['tokens_per_second']:10.1f} tokens/s "
                      f"{result['samples_per_second']:8.3f} samples/s  peak {result['peak_memory_gb']:.2f} GiB  "
                      f"steps {' '.join(f'{s:.1f}s' for s in result['step_seconds'])}", flush=True)
    rows = summarize(results, recipes)
    print(f"\n| recipe | precision | tokens/s (median of {args.rounds}) | samples/s | peak memory GiB | x notebook "
          "| model GFLOP/s | share of the matmul rate | loss per step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        losses = " ".join(f"{x:.4f}" if x is not None else "-" for x in row["losses"])
        precision = row["precision"] + (" weights" if row["weights"] != "float32" else " autocast" if row["precision"] != "fp32" else "")
        print(f"| {row['recipe']} | {precision} | {row['tokens_per_second']:.1f} | {row['samples_per_second']:.3f} | "
              f"{row['peak_memory_gb']:.2f} | {row['ratio']:.2f}x | {row['flops_per_second'] / 1e9:.1f} | "
              f"{100 * row['share_of_matmul_rate']:.1f}% | {losses} |")
    first = results[0]
    print(f"device {first.get('gpu', first['device'])}; the share is of the {'/'.join(rates)} matmul rate of the recipe's "
          f"precision; model FLOPs = forward (output layer on completion tokens only) + backward (2x forward for full "
          f"fine-tuning, 1x for LoRA); load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        write_json(args.json, {"data": what, "recipes": {n: as_dict(p) for n, p in params.items()},
                               "summary": rows, "runs": results})


if __name__ == "__main__":
    run_main(main)
