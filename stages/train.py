"""train stage: supervised fine-tuning of models/base/ on data/formatted/ with TRL's SFTTrainer.

    dvc repro train
    python -m stages.train --params params.yaml --data-dir data/formatted --base-model models/base \\
        --out-dir models/finetuned --checkpoint-dir models/checkpoints \\
        --metrics metrics/train.json --live-dir metrics/train
    dvc exp run -S train.num_processes=4 train      # 4 processes (GPUs): the stage relaunches itself (pipeline/launch.py)
    accelerate launch --config_file CFG.yaml -m stages.train ...same arguments...   # or by hand: several GPUs/nodes

Under `accelerate launch` (DDP, FSDP, DeepSpeed: whatever the accelerate config says) every
process runs this module; the main process alone writes fingerprint.json, the dvclive files, the
model and the metrics. On a CPU-only machine the processes join over gloo (a two-process CPU
run is in the tests: `accelerate launch --multi_gpu --num_processes 2`, since accelerate's own
multi-CPU mode needs MPI). The per-device batch stays `train.per_device_batch_size`, so the
effective batch grows with the number of processes (metrics: effective_batch_size).

Reads `train.*` from params.yaml, data/formatted/{train,eval}.jsonl (prompt/completion rows
from the format stage) and models/base/. Writes:
- models/finetuned/: a plain Hugging Face model folder (safetensors in float32, tokenizer, chat
  template, generation config); LoRA adapters are merged in, so later stages see a plain model.
  Float32 on purpose: the updates of lr 1e-5 are far below bf16's resolution, and rounding to a
  bf16 base's dtype would erase much of the fine-tuning.
- models/checkpoints/: resumable checkpoints plus fingerprint.json (a `persist: true` output);
- metrics/train.json: flat summary (final losses, steps, epochs, runtime, throughput, peak
  memory, device, precision, optimizer, the learning rate the optimizer ran with, versions);
- metrics/train/: dvclive history, plots/metrics/{train,eval}/<metric>.tsv with the optimizer
  step as x (declared as DVC plots in dvc.yaml; dvclive never touches dvc.yaml).

Token-exact examples (FORMAT.md; tests/test_train.py asserts the ids). Rows are tokenized here,
not by TRL, because TRL's defaults differ from the runtime in two places:
- one `<bos>`: the prompt text already begins with the literal "<bos>", so prompt and completion
  are tokenized with add_special_tokens=False (TRL's tokenizer call would add a second one);
- no `<eos>`: the completion ends where FORMAT.md ends it, on `<start_function_response>` (tool
  calls) or `<end_of_turn>\\n` (a text answer), the tokens the runtime stops on
  (generation_config eos = [<eos>, <end_of_turn>, <start_function_response>]). TRL appends
  `<eos>` to every completion, as the notebook's run did; that trains a token that never follows
  `<start_function_response>` in use (the tool's response does), so we do not;
- prompt positions are labelled -100: the loss is on the completion tokens only.
Prompt and completion are tokenized separately, so the prompt ids are exactly the ones the
runtime prefills. Examples longer than `format.max_length` (the one maximum length) are cut at the end; an example with
no completion token left is dropped (both counted in the metrics).

Output layer: TRL's fused LM head never builds the (tokens x 262k) logits; on CUDA it also skips
positions without a label. `train.skip_prompt_logits` extends that to every device (same loss).

Resume: checkpoints go to models/checkpoints/ (`train.save_strategy`, and always at the last
step). The folder carries fingerprint.json: a hash of everything that shapes the result (the
train params and format.max_length, the formatted data, the base model, the code of this stage
and of every project module it imports, the versions of torch/transformers/trl/peft/accelerate,
the number of processes) and whether that run finished. A run resumes only an interrupted run
with the same fingerprint ("resuming from checkpoint-N"); when the previous run finished, or
differs in anything above, it starts over from the base model and says why. A finished run is
marked so as soon as its model is saved, and its checkpoints are deleted then (a full
fine-tuning checkpoint of the 270M is ~3.3 GB) unless `train.keep_checkpoints` is true. Under
`accelerate launch` every process reads the folder and decides before the main process resets
it. A `.gitignore` inside the folder keeps checkpoints out of the git commits `dvc exp run` makes.

Throughput figures in metrics/train.json: `train_tokens_per_second` counts non-pad tokens over
the time spent inside optimizer steps (periodic eval and checkpoint saving excluded);
`samples_per_second` and `runtime_seconds` are the Trainer's, over all of `train()`.
peak_memory_gb is the process's peak resident set on CPU, peak allocated CUDA memory on a GPU (GB = 2**30 bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import functiongemma as fg
from pipeline.codebase import ROOT, code_closure
from pipeline.common import UserError, digest_files, package_versions, read_json, run_main, run_record, write_json
from pipeline.examples import read_examples, select_rows
from pipeline.hardware import detect_device, train_precision
from pipeline.launch import accelerate_config_file, check_devices, launch_command, launched_processes
from pipeline.params import FormatParams, TrainParams, as_dict, load_params

log = logging.getLogger("train")

FINGERPRINT_FILE = "fingerprint.json"
SHAPING_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate")  # their versions are part of a run's identity
FUSED_ADAMW_DEVICES = ("cuda", "cpu", "mps", "xpu")  # where torch.optim.AdamW(fused=True) runs
PLOTTED = ("loss", "mean_token_accuracy", "learning_rate", "grad_norm", "entropy")  # logged per step to dvclive


# ---------------------------------------------------------------- pure: examples


def tokenize_example(tokenizer: Any, prompt: str, completion: str) -> dict[str, list[int]]:
    """Token ids of prompt + completion and the completion mask (1 = trained), exactly one <bos>, no <eos> added."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not prompt.startswith(fg.BOS):  # rows from elsewhere: the model was trained with a leading <bos>
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def build_examples(tokenizer: Any, rows: list[dict], max_length: int) -> tuple[list[dict], int, int]:
    """Tokenized examples cut to max_length; returns (examples, rows truncated, rows dropped: no completion left)."""
    examples, truncated, dropped = [], 0, 0
    for row in rows:
        ex = tokenize_example(tokenizer, row["prompt"], row["completion"])
        if len(ex["input_ids"]) > max_length:
            truncated += 1
            ex = {key: ids[:max_length] for key, ids in ex.items()}
            if not any(ex["completion_mask"]):
                dropped += 1
                continue
        examples.append(ex)
    return examples, truncated, dropped


# ---------------------------------------------------------------- pure: run settings


def resolve_optim(requested: str, device_type: str) -> str:
    """adamw_torch_fused where torch has the fused kernel for this device, else adamw_torch."""
    if requested == "adamw_torch_fused" and device_type not in FUSED_ADAMW_DEVICES:
        return "adamw_torch"
    return requested


def fingerprint(inputs: dict[str, Any]) -> str:
    """Identity of a training run (see `run_inputs`): a checkpoint is resumed only by a run with the same one."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def live_metric_name(key: str) -> str | None:
    """Trainer log key -> dvclive metric name (train/loss, eval/loss, ...); None for keys not plotted."""
    split, name = ("eval", key[5:]) if key.startswith("eval_") else ("train", key)
    if name not in PLOTTED or (split == "eval" and name in ("learning_rate", "grad_norm")):
        return None
    return f"{split}/{name}"


def last_logged(log_history: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in log_history if key in entry]
    return values[-1] if values else None


def first_logged(log_history: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in log_history if key in entry]
    return values[0] if values else None


# ---------------------------------------------------------------- edge: files


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """checkpoint-N folders whose save finished (trainer_state.json is written last), oldest first."""
    found = [p for p in checkpoint_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted((p for p in found if (p / "trainer_state.json").exists()), key=lambda p: int(p.name.split("-")[-1]))


def run_inputs(params: TrainParams, max_length: int, data_dir: Path, base_model: Path, world_size: int) -> dict[str, Any]:
    """Everything that shapes a training run's result, as hashable values (file contents as sha256)."""

    def relative(digests: dict[str, str], root: Path) -> dict[str, str]:  # the same inputs anywhere on disk
        return {str(Path(p).relative_to(root)): d for p, d in digests.items()}

    return {
        "train": as_dict(params),
        "format.max_length": max_length,
        "data": relative(digest_files(data_dir / "train.jsonl", data_dir / "eval.jsonl"), data_dir),
        "base_model": relative(digest_files(base_model), base_model),
        "code": relative(digest_files(*(ROOT / p for p in code_closure("stages.train"))), ROOT),
        "versions": package_versions(*SHAPING_PACKAGES),
        "world_size": world_size,
    }


def find_resume_checkpoint(checkpoint_dir: Path, run_id: str) -> tuple[Path | None, str]:
    """(checkpoint to resume from or None, why) for a run with this fingerprint."""
    marker = checkpoint_dir / FINGERPRINT_FILE
    record = read_json(marker) if marker.is_file() else {}
    done = complete_checkpoints(checkpoint_dir) if checkpoint_dir.is_dir() else []
    if record.get("fingerprint") == run_id and record.get("finished"):
        return None, "the previous run with these inputs finished; training again from the start"
    if not done:
        return None, "no checkpoint to resume from"
    if record.get("fingerprint") != run_id:
        return None, (f"{done[-1].name} belongs to a run with other params, data, base model, code, "
                      "library versions or number of processes")
    return done[-1], f"an interrupted run left {done[-1].name}"


def reset_checkpoint_dir(checkpoint_dir: Path, run_id: str) -> None:
    """Remove old checkpoints and mark the folder with this run's fingerprint (not finished)."""
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    (checkpoint_dir / ".gitignore").write_text("# written by stages/train.py: checkpoints never go to git\n*\n")
    write_json(checkpoint_dir / FINGERPRINT_FILE, {"fingerprint": run_id, "finished": False})


def finish_checkpoint_dir(checkpoint_dir: Path, run_id: str, steps: int, keep: bool) -> None:
    """Mark the run finished (its model is saved) and, unless asked to keep them, delete its checkpoints."""
    if not keep:
        for path in complete_checkpoints(checkpoint_dir) + list(checkpoint_dir.glob("checkpoint-*")):
            shutil.rmtree(path, ignore_errors=True)
    write_json(checkpoint_dir / FINGERPRINT_FILE, {"fingerprint": run_id, "finished": True, "steps": steps})


def trim_live_history(live_dir: Path, last_step: int) -> None:
    """Drop dvclive rows logged after the checkpoint a run resumes from (they are logged again)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        header, rows = lines[:1], lines[1:]
        column = header[0].rstrip("\r\n").split("\t").index("step") if header else 0
        tsv.write_text("".join(header + [r for r in rows if int(r.split("\t")[column]) <= last_step]), encoding="utf-8")


def peak_memory_gb(device_type: str) -> tuple[float, str]:
    import torch

    if device_type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**30, 3), "cuda_max_allocated"
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), "process_peak_rss"  # KiB on Linux


# ---------------------------------------------------------------- trainer pieces


def score_only_loss_positions(enabled: bool) -> None:
    """Make TRL's fused LM head project only positions that carry a label, on every device.

    TRL 1.16 takes this compact path only where Triton runs (CUDA/XPU) and projects every position
    elsewhere, to keep tile shapes fixed on Neuron. On CPU that sends the whole prompt through the
    262k-word output layer for nothing. The loss is the same either way (tests assert it).
    """
    import trl.trainer.utils as trl_utils
    from trl.kernels.chunked_logprob import _use_triton

    if not hasattr(trl_utils, "_use_triton"):  # pragma: no cover - a TRL other than the pinned one
        raise RuntimeError("train.skip_prompt_logits relies on trl==1.16.0's fused LM head; install the pinned trl")
    trl_utils._use_triton = (lambda device: True) if enabled else _use_triton


def developer_turn_split(input_ids: list[list[int]], labels: list[list[int]], start_of_turn: int,
                         developer: list[int]) -> int:
    """Leading tokens of every row of a batch that `train.detach_developer_turn` runs without gradient.

    A row's developer turn (<bos><start_of_turn>developer ... up to its second <start_of_turn>) holds the
    instructions and the tool declarations; the split is the shortest one in the batch, kept short of the
    position that predicts the row's first trained token. 0 (no split) when some row does not open with a
    developer turn.
    """
    split = None
    opening = [start_of_turn, *developer]
    for ids, labs in zip(input_ids, labels):
        if ids[1:1 + len(opening)] != opening:
            return 0
        turns = [i for i, token in enumerate(ids) if token == start_of_turn]
        first_trained = next((i for i, label in enumerate(labs) if label != -100), len(labs))
        end = min(turns[1] if len(turns) > 1 else 0, first_trained - 1)
        split = end if split is None else min(split, end)
    return max(split or 0, 0)


def with_cached_prefix(model: Any, inputs: dict[str, Any], split: int, *, bf16: bool, dtype: Any) -> dict[str, Any]:
    """The batch's inputs for tokens `split:`, its first `split` tokens run without gradient into a KV cache
    (under bf16 autocast when `bf16`, else in float32), the cache then cast to `dtype`, the dtype the rest
    of the forward computes keys in.

    The attention mask keeps its full length (cache + new tokens), the labels are cut with the ids, so the
    loss is the full forward's; only the gradient through the cached positions is left out.
    """
    import torch

    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    device = ids.device.type
    precision = torch.autocast(device, dtype=torch.bfloat16) if bf16 else torch.autocast(device, enabled=False)
    with torch.no_grad(), precision:
        cache = model(input_ids=ids[:, :split], attention_mask=None if mask is None else mask[:, :split],
                      use_cache=True, logits_to_keep=1).past_key_values
    for layer in cache.layers:
        if layer.keys.dtype != dtype:
            layer.keys, layer.values, layer.dtype = layer.keys.to(dtype), layer.values.to(dtype), dtype
    rest = dict(inputs, input_ids=ids[:, split:], labels=inputs["labels"][:, split:], past_key_values=cache)
    for key in ("position_ids", "completion_mask"):
        if key in inputs:
            rest[key] = inputs[key][:, split:]
    return rest


def trainer_class(params: TrainParams, tokenizer: Any, device: str) -> type:
    """SFTTrainer, or (train.detach_developer_turn) one whose loss first runs each batch's developer turns
    into a KV cache, in train.developer_turn_precision."""
    import torch
    from trl import SFTTrainer

    if not params.detach_developer_turn:
        return SFTTrainer
    start_of_turn = tokenizer.convert_tokens_to_ids(fg.START_OF_TURN)
    developer = tokenizer("developer", add_special_tokens=False)["input_ids"]
    cache_bf16 = train_precision(params.developer_turn_precision, device) == "bf16"

    class DeveloperTurnCachedTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            split = developer_turn_split(inputs["input_ids"].tolist(), inputs["labels"].tolist(), start_of_turn, developer)
            if split > 0:
                kind = inputs["input_ids"].device.type
                dtype = (torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind)
                         else self.accelerator.unwrap_model(model).dtype)
                inputs = with_cached_prefix(model, inputs, split, bf16=cache_bf16, dtype=dtype)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return DeveloperTurnCachedTrainer


def make_callbacks(live: Any) -> list[Any]:
    """dvclive logging keyed by optimizer step, and a clock for the time spent inside optimizer steps."""
    from transformers import TrainerCallback
    from transformers.integrations import DVCLiveCallback

    class LiveCallback(DVCLiveCallback):
        """transformers' DVCLiveCallback, with x = optimizer step instead of a count of log calls."""

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if not self._initialized:
                self.setup(args, state, model)
            if not state.is_world_process_zero or "train_samples_per_second" in (logs or {}):
                return  # the end-of-run summary goes to metrics/train.json
            self.live.step = state.global_step
            for key, value in (logs or {}).items():
                name = live_metric_name(key)
                if name is not None and isinstance(value, (int, float)):
                    self.live.log_metric(name, value)
            self.live.make_summary()

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.tokens, self._start, self._tokens_at_start = 0.0, 0, 0.0, 0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start, self._tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._start
            self.tokens += state.num_input_tokens_seen - self._tokens_at_start

    # Without our Live (tests, non-main processes) there is no dvclive callback at all: transformers'
    # own would create Live() with its defaults, which logs to ./dvclive and rewrites ./dvc.yaml.
    return [StepClock()] if live is None else [LiveCallback(live=live), StepClock()]


def sft_config(params: TrainParams, checkpoint_dir: Path, precision: str, optim: str, has_eval: bool, use_cpu: bool,
               max_length: int, **overrides: Any) -> Any:
    """TRL's config from our params (`overrides`: other SFTConfig fields, e.g. for the benchmark).

    Creating it also sets up the process group under `accelerate launch`.
    """
    from trl import SFTConfig

    settings = dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_batch_size,
        per_device_eval_batch_size=params.per_device_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.lr,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_ratio,  # below 1: a fraction of all steps
        weight_decay=params.weight_decay,
        optim=optim,
        max_length=max_length if params.packing else None,  # examples are already cut; packing needs the block size
        packing=params.packing,
        padding_free=params.padding_free,
        completion_only_loss=True,
        loss_type=params.loss_type,
        # transformers 5's name; `gradient_checkpointing` is its deprecated alias (a FutureWarning when given,
        # and TRL defaults it to True): set this one and the alias mirrors it
        activation_checkpointing=params.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=params.eval_steps,
        save_strategy=params.save_strategy,
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        seed=params.seed,
        data_seed=params.seed,
        torch_compile=params.torch_compile,
        report_to="none",  # our own dvclive callback is added by build_trainer (see make_callbacks)
        include_num_input_tokens_seen="non_padding",
        use_cpu=use_cpu,  # on a CPU-only machine this also selects gloo when several processes were launched
    )
    return SFTConfig(**{**settings, **overrides})


def lora_config(params: TrainParams) -> Any:
    if not params.lora.enabled:
        return None
    from peft import LoraConfig

    modules = params.lora.target_modules
    return LoraConfig(
        r=params.lora.r,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules="all-linear" if modules == ["all-linear"] else list(modules),
        task_type="CAUSAL_LM",
    )


def build_trainer(params: TrainParams, base_model: Path, tokenizer: Any, train_examples: list[dict],
                  eval_examples: list[dict], config: Any, live: Any = None, model_dtype: Any = None) -> Any:
    """An SFTTrainer on pre-tokenized examples (input_ids + completion_mask), with our callbacks.

    Weights load in float32 (see the module docstring); `model_dtype` overrides that (the
    benchmark's notebook recipe loads bf16 weights on a GPU, as the notebook does).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    score_only_loss_positions(params.skip_prompt_logits)
    model = AutoModelForCausalLM.from_pretrained(
        base_model, dtype=model_dtype or torch.float32, attn_implementation=params.attn_implementation
    )
    trainer = trainer_class(params, tokenizer, detect_device())(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
        processing_class=tokenizer,
        peft_config=lora_config(params),
        callbacks=make_callbacks(live),
    )
    return trainer


def save_finetuned(trainer: Any, out_dir: Path, lora: bool) -> None:
    """A plain HF folder: merged weights (LoRA) or the trained model, plus the tokenizer."""
    if out_dir.exists() and trainer.is_world_process_zero():
        shutil.rmtree(out_dir)
    if not lora:
        trainer.save_model(str(out_dir))  # gathers DDP/FSDP shards; writes on the main process
    elif trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(out_dir))
        trainer.processing_class.save_pretrained(str(out_dir))
    if trainer.is_world_process_zero():
        (out_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle of the run's arguments; the metrics hold them


def final_eval_metrics(trainer: Any) -> dict:
    """The eval metrics of the final weights (reused when the last step already evaluated)."""
    if trainer.eval_dataset is None:
        return {}
    last = [h for h in trainer.state.log_history if "eval_loss" in h and h["step"] == trainer.state.global_step]
    return last[-1] if last else trainer.evaluate()


def train_metrics(trainer: Any, output: Any, final_eval: dict, extra: dict) -> dict:
    """Flat keys for metrics/train.json (what `dvc metrics diff` shows)."""
    history, args = trainer.state.log_history, trainer.args
    clock = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "StepClock")
    group = trainer.optimizer.param_groups[0]
    return {
        "train_loss": last_logged(history, "loss"),
        "train_loss_first": first_logged(history, "loss"),
        "train_mean_token_accuracy": last_logged(history, "mean_token_accuracy"),
        "eval_loss": final_eval.get("eval_loss"),
        "eval_mean_token_accuracy": final_eval.get("eval_mean_token_accuracy"),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "runtime_seconds": round(output.metrics["train_runtime"], 3),
        "train_step_seconds": round(clock.seconds, 3),
        "train_tokens": clock.tokens,
        "train_tokens_per_second": round(clock.tokens / clock.seconds, 3) if clock.seconds else None,
        "samples_per_second": output.metrics["train_samples_per_second"],
        "lr": group.get("initial_lr", group["lr"]),  # the peak learning rate the optimizer was built with
        "lr_final": last_logged(history, "learning_rate"),
        "world_size": args.world_size,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        **extra,
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fine-tune the base model on the formatted rows (TRL SFT).")
    parser.add_argument("--params", required=True, help="params.yaml (train.* and format.max_length are read)")
    parser.add_argument("--data-dir", type=Path, required=True, help="formatted rows: train.jsonl, eval.jsonl")
    parser.add_argument("--base-model", type=Path, required=True)
    for flag in ("--out-dir", "--checkpoint-dir", "--metrics", "--live-dir", "--record"):
        parser.add_argument(flag, type=Path, required=True, help="output (dvc.yaml declares it)")
    return parser.parse_args(argv)


def plan_hardware(params: TrainParams, device: str) -> tuple[str, str]:
    """(precision, optimizer) for this device, saying when the optimizer falls back."""
    precision = train_precision(params.precision, device)
    optim = resolve_optim(params.optim, device)
    if optim != params.optim:
        log.warning("%s is not available on %s: using %s", params.optim, device, optim)
    return precision, optim


def load_examples(data_dir: Path, params: TrainParams, max_length: int, tokenizer: Any) -> tuple[list, list, dict]:
    """(train examples, eval examples, counts for the metrics)."""
    rows = read_examples(data_dir / "train.jsonl")
    eval_rows = select_rows(read_examples(data_dir / "eval.jsonl", allow_empty=True), params.eval_rows)
    train_ex, truncated, dropped = build_examples(tokenizer, rows, max_length)
    eval_ex, _, _ = build_examples(tokenizer, eval_rows, max_length)
    if not train_ex:
        raise UserError(f"{data_dir / 'train.jsonl'} has no example with a completion token within format.max_length: raise it")
    return train_ex, eval_ex, {"train_rows": len(train_ex), "eval_rows": len(eval_ex),
                               "rows_truncated": truncated, "rows_dropped": dropped}


def prepare_run(args: argparse.Namespace, run_id: str, state: Any) -> tuple[Path | None, Any]:
    """(checkpoint to resume from, dvclive logger on the main process): resume an interrupted run or start clean.

    Every process decides from the folder as it is, and only then may the main process reset it.
    """
    resume, why = find_resume_checkpoint(args.checkpoint_dir, run_id)
    state.wait_for_everyone()  # every process has read the folder before it changes
    live = None
    if state.is_main_process:
        if resume is None:
            log.info("starting from the base model (%s)", why)
            reset_checkpoint_dir(args.checkpoint_dir, run_id)
        else:
            log.info("resuming from %s (%s)", resume.name, why)
            trim_live_history(args.live_dir, int(resume.name.split("-")[-1]))
        from dvclive import Live

        live = Live(dir=str(args.live_dir), resume=resume is not None, dvcyaml=False, save_dvc_exp=False)
    state.wait_for_everyone()  # the folder is reset before any process writes a checkpoint
    return resume, live


def launch_processes(params: TrainParams, argv: list[str]) -> bool:
    """With train.num_processes > 1 and not yet launched: run this stage under `accelerate launch` with that
    many processes and wait for them (True); inside a launched run, or for one process, do nothing (False)."""
    launched = launched_processes()
    if launched is not None:
        if params.num_processes > 1 and launched != params.num_processes:
            log.warning("train.num_processes is %d, but this run was launched with %d processes: training on %d",
                        params.num_processes, launched, launched)
        return False
    if params.num_processes == 1:
        return False
    check_devices(params.num_processes)
    config = accelerate_config_file()
    cmd = launch_command(params.num_processes, "stages.train", argv, config)
    log.info("train.num_processes = %d: %s", params.num_processes,
             " ".join(["accelerate launch", *cmd[3:]]) + (f" (the launch follows {config})" if config else ""))
    returncode = subprocess.run(cmd).returncode
    if returncode != 0:
        raise UserError(f"the {params.num_processes} training processes failed (exit {returncode}); their log above "
                        "names the reason")
    return True


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params: TrainParams = load_params("train", path=args.params)
    max_length = load_params("format", path=args.params).max_length
    if launch_processes(params, argv):
        return
    from accelerate import PartialState
    from transformers import AutoTokenizer

    device = detect_device()
    precision, optim = plan_hardware(params, device)
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    train_ex, eval_ex, counts = load_examples(args.data_dir, params, max_length, tokenizer)
    config = sft_config(params, args.checkpoint_dir, precision, optim, bool(eval_ex), use_cpu=device == "cpu",
                        max_length=max_length)
    state = PartialState()  # set up by the config: one process, or one of those `accelerate launch` started
    per_step = params.per_device_batch_size * params.gradient_accumulation_steps * state.num_processes
    log.info("%d train / %d eval examples; %d sequences per optimizer step (%d x %d x %d processes), ~%d steps per epoch; "
             "%s, %s on %s", len(train_ex), len(eval_ex), per_step, params.per_device_batch_size,
             params.gradient_accumulation_steps, state.num_processes, math.ceil(len(train_ex) / per_step),
             precision, optim, device)

    run_id = fingerprint(run_inputs(params, max_length, args.data_dir, args.base_model, state.num_processes))
    resume, live = prepare_run(args, run_id, state)
    trainer = build_trainer(params, args.base_model, tokenizer, train_ex, eval_ex, config, live)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    final_eval = final_eval_metrics(trainer)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)  # before a LoRA merge
    save_finetuned(trainer, args.out_dir, params.lora.enabled)

    if state.is_main_process:
        resumed = int(resume.name.split("-")[-1]) if resume else 0
        finish_checkpoint_dir(args.checkpoint_dir, run_id, trainer.state.global_step, params.keep_checkpoints)
        memory, memory_kind = peak_memory_gb(device)
        metrics = train_metrics(trainer, output, final_eval, {
            **counts, "resumed_from_step": resumed, "steps_trained": trainer.state.global_step - resumed,
            "precision": precision, "optim": optim, "lora": params.lora.enabled, "trainable_parameters": trainable,
            "peak_memory_gb": memory, "peak_memory_kind": memory_kind})
        write_json(args.metrics, metrics)
        write_json(args.record, run_record(seed=params.seed, fingerprint=run_id, device_type=device,
                                           **{f"version_{k}": v for k, v in package_versions("accelerate", "dvclive").items()}))
        log.info("done: %d steps (%d trained in this run), train loss %s, eval loss %s, %.1f train tokens/s, "
                 "peak memory %.2f GB; model in %s", metrics["steps"], metrics["steps_trained"], metrics["train_loss"],
                 metrics["eval_loss"], metrics["train_tokens_per_second"] or 0, memory, args.out_dir)
    state.wait_for_everyone()


if __name__ == "__main__":
    run_main(main)
