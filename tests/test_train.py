"""The train stage on the tiny random Gemma 3 (same 262k tokenizer as the 270M).

Token-exact examples, training that moves the weights and the loss, LoRA merged into a
plain model, resume after a kill under `dvc repro`, `dvc exp run -S train.lr=...`, and
`accelerate launch` with two CPU processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import functiongemma as fg
from pipeline.common import UserError
from pipeline.hardware import native_bf16, resolve_precision
from pipeline.params import ParamsError
from stages import train
from tests.helpers import DVC, OFFLINE_TINY, ROOT, env, init_repo, make_project, quick_config, run, set_params, train_params

BOS_ID, EOS_ID, END_OF_TURN_ID, START_CALL_ID, START_RESPONSE_ID = 2, 1, 106, 48, 50

# Small and fast: 2 sequences per step, no gradient checkpointing, a 2-row eval set.
QUICK = {
    "train.max_steps": 4,
    "train.per_device_batch_size": 2,
    "train.gradient_accumulation_steps": 1,
    "train.gradient_checkpointing": False,
    "train.eval_steps": 2,
    "train.eval_rows": 2,
    "train.save_strategy": "steps",
    "train.save_steps": 2,
}
STAGE_OUTPUTS = ["--out-dir", "models/finetuned", "--checkpoint-dir", "models/checkpoints", "--metrics",
                 "metrics/train.json", "--live-dir", "metrics/train", "--record", "metrics/record/train.json"]


# ---------------------------------------------------------------- helpers


def formatted(row: dict) -> dict:
    """A prompt/completion pair as the format stage writes it (the fields every reader checks)."""
    return {"target_calls": [], "tools": [], "messages": [], **row}


@pytest.fixture
def text_answer_row(golden_rows) -> dict:
    """A formatted row whose completion is a text answer, not a call."""
    row = dict(golden_rows[0])
    row["messages"] = row["messages"][:2] + [{"role": "assistant", "content": "I cannot do that."}]
    return formatted(fg.render_row(row))


def params_file(folder: Path, updates: dict[str, object]) -> Path:
    path = folder / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    set_params(path, updates)
    return path


def write_formatted(folder: Path, train_rows: list[dict], eval_rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(formatted(row), ensure_ascii=False) + "\n")
    return folder


def sample_rows(formatted_dir: Path, split: str, n: int) -> list[dict]:
    lines = (formatted_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:n]]


def run_stage(workdir: Path, params: Path, data: Path, base: Path) -> dict:
    """The stage in this process, as dvc.yaml's cmd calls it (outputs under workdir); returns metrics/train.json."""
    outputs = [str(workdir / v) if not v.startswith("--") else v for v in STAGE_OUTPUTS]
    train.main(["--params", str(params), "--data-dir", str(data), "--base-model", str(base), *outputs])
    return json.loads((workdir / "metrics/train.json").read_text())


def state_dict(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def sh(cmd: list[str], cwd: Path, timeout: int = 300, stdout_only: bool = False) -> str:
    return run(cmd, cwd, timeout=timeout, stdout_only=stdout_only, PYTHONPATH=str(ROOT))


def make_repo(tmp_path: Path, updates: dict[str, object], tiny_base: Path, formatted_sample: Path) -> Path:
    """A git + DVC repo with the project's pipeline, upstream outputs already in place (models/base, data/formatted)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for package in ("stages", "pipeline"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    set_params(repo / "params.yaml", updates)
    (repo / ".gitignore").write_text("__pycache__/\n/models/base\n/data/formatted\n")
    init_repo(repo)
    shutil.copytree(tiny_base, repo / "models/base")
    write_formatted(repo / "data/formatted", sample_rows(formatted_sample, "train", 8), sample_rows(formatted_sample, "eval", 2))
    return repo


def start_and_kill_after_first_checkpoint(repo: Path, cmd: list[str]) -> list[int]:
    """Start `cmd` in the repo, SIGKILL it (and the stage it runs) right after its first complete checkpoint;
    returns the steps of the checkpoints it left."""
    ckpt = repo / "models/checkpoints"
    first = subprocess.Popen(cmd, cwd=repo, env=env(PYTHONPATH=str(ROOT)), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not train.complete_checkpoints(ckpt) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    return [int(p.name.split("-")[-1]) for p in train.complete_checkpoints(ckpt)]


# ---------------------------------------------------------------- token-exact examples


def test_tokenized_example_has_one_bos_masked_prompt_and_ends_on_the_stop_token(tiny_base, tiny_tokenizer, tmp_path,
                                                                              monkeypatch, golden_expected, text_answer_row):
    """What the trainer trains on, read back from TRL's prepared dataset, for the golden rows."""
    monkeypatch.chdir(tmp_path)
    from transformers import GenerationConfig

    names = [fg.BOS, fg.EOS, fg.END_OF_TURN, fg.START_CALL, fg.START_RESPONSE]
    assert tiny_tokenizer.convert_tokens_to_ids(names) == [BOS_ID, EOS_ID, END_OF_TURN_ID, START_CALL_ID, START_RESPONSE_ID]
    stops = GenerationConfig.from_pretrained(tiny_base).eos_token_id  # what generation stops on
    rows = [*map(formatted, golden_expected), text_answer_row]
    examples, truncated, dropped = train.build_examples(tiny_tokenizer, rows, max_length=997)
    trainer = train.build_trainer(train_params(), tiny_base, tiny_tokenizer, examples, [], quick_config(train_params(), tmp_path))

    for row, prepared in zip(rows, trainer.train_dataset):
        ids, labels = prepared["input_ids"], prepared["labels"]
        start = next(i for i, label in enumerate(labels) if label != -100)  # first trained position
        assert ids[0] == BOS_ID and ids.count(BOS_ID) == 1
        assert EOS_ID not in ids
        assert all(label == -100 for label in labels[:start]) and labels[start:] == ids[start:]
        assert tiny_tokenizer.decode(ids[:start]) == row["prompt"]  # the prompt the runtime prefills, byte for byte
        assert tiny_tokenizer.decode(ids[start:]) == row["completion"]
        assert ids == tiny_tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
    calls = list(trainer.train_dataset)[: len(golden_expected)]
    assert all(ex["input_ids"][-1] == START_RESPONSE_ID for ex in calls)  # ends on <start_function_response>, no <eos>
    assert all(ex["input_ids"][next(i for i, x in enumerate(ex["labels"]) if x != -100)] == START_CALL_ID for ex in calls)
    text = trainer.train_dataset[len(rows) - 1]["input_ids"]
    assert text[-2] == END_OF_TURN_ID and tiny_tokenizer.decode(text[-1:]) == "\n"  # a text answer: <end_of_turn>\n
    assert START_RESPONSE_ID in stops and END_OF_TURN_ID in stops  # each completion ends on a token the runtime stops on
    assert (truncated, dropped) == (0, 0)
    # the trap this avoids: the tokenizer's default call adds a second <bos> to our prompts
    assert tiny_tokenizer(rows[0]["prompt"])["input_ids"][:2] == [BOS_ID, BOS_ID]


def test_long_examples_are_cut_and_prompt_only_ones_dropped(tiny_tokenizer, golden_expected):
    row = golden_expected[0]
    prompt_len = len(tiny_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
    examples, truncated, dropped = train.build_examples(tiny_tokenizer, [row, row], max_length=prompt_len + 3)
    assert (truncated, dropped) == (2, 0)
    assert all(len(ex["input_ids"]) == prompt_len + 3 and sum(ex["completion_mask"]) == 3 for ex in examples)
    assert train.build_examples(tiny_tokenizer, [row], max_length=prompt_len)[1:] == (1, 1)


def test_prompt_without_bos_gets_exactly_one(tiny_tokenizer, golden_expected):
    row = golden_expected[0]
    ex = train.tokenize_example(tiny_tokenizer, row["prompt"].removeprefix(fg.BOS), row["completion"])
    assert ex["input_ids"][0] == BOS_ID and ex["input_ids"].count(BOS_ID) == 1


# ---------------------------------------------------------------- loss paths give the same loss


def _batch_loss(trainer) -> float:
    import torch

    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def test_skip_prompt_logits_and_padding_free_keep_the_loss(tiny_base, tiny_tokenizer, tmp_path, monkeypatch, golden_expected):
    monkeypatch.chdir(tmp_path)
    examples, _, _ = train.build_examples(tiny_tokenizer, golden_expected, max_length=997)  # different lengths: padding matters
    params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False)
    trainer = train.build_trainer(params, tiny_base, tiny_tokenizer, examples, [], quick_config(params, tmp_path))
    train.score_only_loss_positions(False)
    reference = _batch_loss(trainer)  # every position through the output layer (TRL's CPU path)
    train.score_only_loss_positions(True)
    compact = _batch_loss(trainer)
    params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False, padding_free=True)
    padding_free = _batch_loss(train.build_trainer(params, tiny_base, tiny_tokenizer, examples, [], quick_config(params, tmp_path)))
    assert reference > 5  # a random model: about ln(262144) = 12.5 per token
    assert compact == pytest.approx(reference, rel=1e-5)
    assert padding_free == pytest.approx(reference, rel=1e-4)  # examples stay apart without padding


def test_developer_turn_split_is_the_shortest_developer_turn_short_of_the_first_trained_token():
    sot, dev, bos, x = 1, [7, 8], 2, 5  # <start_of_turn>, "developer" (two tokens here), <bos>, any token
    row = [bos, sot, *dev, x, x, x, sot, x, x, sot, x, x, x]  # developer turn = first 7 tokens, then two turns
    labels = [-100] * 11 + [x, x, x]
    longer = [bos, sot, *dev, x, x, x, x, x, sot, x, sot, x, x]
    assert train.developer_turn_split([row], [labels], sot, dev) == 7
    assert train.developer_turn_split([row, longer], [labels, [-100] * 11 + [x, x]], sot, dev) == 7  # the shorter one
    assert train.developer_turn_split([row], [[-100] * 5 + [x] * 9], sot, dev) == 4  # short of what predicts a label
    user_first = [bos, sot, 9, x, x, sot, x]
    assert train.developer_turn_split([row, user_first], [labels, [-100] * 6 + [x]], sot, dev) == 0  # no developer turn
    assert train.developer_turn_split([[bos, sot, *dev, x, x]], [[-100, -100, -100, -100, x, x]], sot, dev) == 0  # one turn only


def test_detached_developer_turn_keeps_the_loss_and_trains_through_the_conversation(tiny_base, tiny_tokenizer, tmp_path,
                                                                                      monkeypatch, formatted_sample):
    import torch

    monkeypatch.chdir(tmp_path)
    rows = sample_rows(formatted_sample, "train", 4)
    examples, _, _ = train.build_examples(tiny_tokenizer, rows, max_length=997)
    assert len({len(e["input_ids"]) for e in examples}) > 1  # different lengths: padding and per-row splits matter
    losses, grads = {}, {}
    for detach in (False, True):
        params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False, lora_enabled=True,
                              detach_developer_turn=detach, developer_turn_precision="fp32")
        trainer = train.build_trainer(params, tiny_base, tiny_tokenizer, examples, [], quick_config(params, tmp_path))
        assert type(trainer).__name__ == ("DeveloperTurnCachedTrainer" if detach else "SFTTrainer")
        torch.manual_seed(0)
        for name, weight in trainer.model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(weight, std=0.5)  # adapters that change the activations
        trainer.model.eval()  # no dropout: both ways see the same function
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        ids = batch["input_ids"].tolist()
        split = train.developer_turn_split(ids, batch["labels"].tolist(), tiny_tokenizer.convert_tokens_to_ids(fg.START_OF_TURN),
                                           tiny_tokenizer("developer", add_special_tokens=False)["input_ids"])
        assert split > 0.8 * min(len(e["input_ids"]) for e in examples)  # the declarations are most of every row
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        losses[detach] = float(loss.detach())
        grads[detach] = {n: w.grad.clone() for n, w in trainer.model.named_parameters() if w.grad is not None}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert grads[True].keys() == grads[False].keys() and grads[True]  # every adapter still learns
    differ = [n for n in grads[True] if not torch.allclose(grads[True][n], grads[False][n], rtol=1e-3, atol=1e-7)]
    assert differ  # the gradient leaves out the cached positions' share of it


@pytest.mark.integration
def test_a_detached_developer_turn_run_trains(tiny_base, formatted_sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = sample_rows(formatted_sample, "train", 2) * 4
    data = write_formatted(tmp_path / "data", rows, rows[:2])
    params = params_file(tmp_path, dict(QUICK, **{"train.max_steps": 6, "train.lr": 1e-2, "train.eval_steps": 3,
                                                 "train.detach_developer_turn": True, "train.lr_scheduler": "constant"}))
    metrics = run_stage(tmp_path, params, data, tiny_base)
    assert metrics["steps"] == 6 and metrics["train_loss"] < metrics["train_loss_first"] - 1.0, metrics
    assert metrics["train_tokens"] > 0 and metrics["eval_loss"] < 11.0


# ---------------------------------------------------------------- params and run settings


@pytest.mark.parametrize("overrides, key", [
    ({"packing": True, "padding_free": False}, "train.packing"),
    ({"max_steps": 0}, "train.max_steps"),
    ({"warmup_ratio": 1.0}, "train.warmup_ratio"),
    ({"lora_enabled": True, "lora_target_modules": []}, "train.lora.target_modules"),
    ({"lora_enabled": True, "lora_target_modules": ["q_proj", "lm_head"]}, "train.lora.target_modules"),
    ({"loss_type": "chunked_nll"}, "train.loss_type"),
    ({"detach_developer_turn": True, "gradient_checkpointing": True}, "train.detach_developer_turn"),
    ({"detach_developer_turn": True, "padding_free": True}, "train.detach_developer_turn"),
    ({"developer_turn_precision": "fp16"}, "train.developer_turn_precision"),
])
def test_invalid_combinations_fail_at_load_time(overrides, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        train_params(**overrides)


def test_precision_and_optimizer_follow_the_hardware():
    assert resolve_precision("auto", "cuda", True) == "bf16"
    assert resolve_precision("auto", "cuda", False) == "fp32"
    assert resolve_precision("auto", "cpu", False) == "fp32"
    assert resolve_precision("auto", "cpu", True) == "bf16"  # AVX512-BF16 / AMX
    assert resolve_precision("auto", "mps", True) == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu", False)
    assert train.resolve_optim("adamw_torch_fused", "cpu") == "adamw_torch_fused"
    assert train.resolve_optim("adamw_torch_fused", "neuron") == "adamw_torch"


def test_fingerprint_covers_everything_that_shapes_the_result(tiny_base, formatted_sample, tmp_path, monkeypatch):
    data = write_formatted(tmp_path / "data", sample_rows(formatted_sample, "train", 2), sample_rows(formatted_sample, "eval", 1))

    def run_id(params=None, max_length=997, base=tiny_base, world_size=1):
        return train.fingerprint(train.run_inputs(params or train_params(), max_length, data, base, world_size))

    base_id = run_id()
    assert base_id == run_id()
    assert base_id != run_id(params=train_params(lr=2e-5))
    assert base_id != run_id(max_length=600)
    assert base_id != run_id(world_size=2)
    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_base, moved)
    assert run_id(base=moved) == base_id  # the same files anywhere on disk
    (moved / "generation_config.json").write_text("{}")
    assert run_id(base=moved) != base_id
    inputs = train.run_inputs(train_params(), 997, data, tiny_base, 1)
    assert {"stages/train.py", "pipeline/params.py", "pipeline/functiongemma.py"} <= set(inputs["code"])
    assert set(inputs["versions"]) == {"torch", "transformers", "trl", "peft", "accelerate"}
    monkeypatch.setattr(train, "package_versions", lambda *names: {n: "0.0" for n in names})
    assert run_id() != base_id  # another torch/transformers/trl/peft/accelerate
    with open(data / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(formatted(sample_rows(formatted_sample, "train", 3)[2])) + "\n")
    monkeypatch.undo()
    assert run_id() != base_id


def test_resume_decision(tmp_path):
    ckpt = tmp_path / "ck"
    assert train.find_resume_checkpoint(ckpt, "a") == (None, "no checkpoint to resume from")
    train.reset_checkpoint_dir(ckpt, "a")
    for step in (2, 4):
        (ckpt / f"checkpoint-{step}").mkdir()
        (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-6").mkdir()  # a save cut short: no trainer_state.json
    assert train.find_resume_checkpoint(ckpt, "a") == (ckpt / "checkpoint-4", "an interrupted run left checkpoint-4")
    resume, why = train.find_resume_checkpoint(ckpt, "b")
    assert resume is None and "other params, data, base model, code" in why
    train.finish_checkpoint_dir(ckpt, "a", steps=6, keep=False)
    assert sorted(p.name for p in ckpt.iterdir()) == [".gitignore", "fingerprint.json"]
    assert train.find_resume_checkpoint(ckpt, "a") == (None, "the previous run with these inputs finished; training again from the start")
    train.reset_checkpoint_dir(ckpt, "a")
    (ckpt / "checkpoint-2").mkdir()
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    train.finish_checkpoint_dir(ckpt, "a", steps=2, keep=True)
    assert (ckpt / "checkpoint-2").is_dir() and train.find_resume_checkpoint(ckpt, "a")[0] is None


def test_live_metric_names():
    assert train.live_metric_name("loss") == "train/loss"
    assert train.live_metric_name("eval_loss") == "eval/loss"
    assert train.live_metric_name("mean_token_accuracy") == "train/mean_token_accuracy"
    assert train.live_metric_name("eval_mean_token_accuracy") == "eval/mean_token_accuracy"
    assert train.live_metric_name("learning_rate") == "train/learning_rate"
    assert train.live_metric_name("eval_runtime") is None and train.live_metric_name("epoch") is None


# ---------------------------------------------------------------- training runs (in process)


@pytest.mark.integration
def test_training_changes_weights_and_lowers_loss(tiny_base, formatted_sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive must not write a dvc.yaml anywhere
    rows = sample_rows(formatted_sample, "train", 2) * 4  # a handful of repeated examples
    data = write_formatted(tmp_path / "data", rows, rows[:2])
    params = params_file(tmp_path, dict(QUICK, **{"train.max_steps": 8, "train.lr": 1e-2, "train.eval_steps": 4,
                                                 "train.save_strategy": "epoch", "train.lr_scheduler": "constant"}))
    metrics = run_stage(tmp_path, params, data, tiny_base)

    assert metrics["steps"] == 8 and metrics["epochs"] == 2.0
    assert metrics["train_loss"] < metrics["train_loss_first"] - 2.0, metrics
    assert metrics["eval_loss"] < 10.0  # eval rows are training rows here: ln(262144) = 12.5 at random
    assert metrics["lr"] == 1e-2 and metrics["precision"] == ("bf16" if native_bf16("cpu") else "fp32")
    assert metrics["train_tokens"] > 0 and metrics["train_tokens_per_second"] > 0 and metrics["peak_memory_gb"] > 0
    for key in ("runtime_seconds", "samples_per_second", "eval_loss", "optim"):
        assert metrics[key] is not None, key
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())  # flat keys
    assert not any(k.startswith("version_") or k in ("device", "platform") for k in metrics)  # a metric, not a record
    record = json.loads((tmp_path / "metrics/record/train.json").read_text())  # what made the run
    assert record["device"] == "cpu" and record["seed"] == 42 and len(record["fingerprint"]) == 64
    for key in ("version_torch", "version_transformers", "version_trl", "version_peft", "version_accelerate"):
        assert record[key] not in (None, "not installed"), key

    before, after = state_dict(tiny_base), state_dict(tmp_path / "models/finetuned")
    assert before.keys() == after.keys()
    assert any(not (before[k] == after[k]).all() for k in before)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "models/finetuned")
    assert (tmp_path / "models/finetuned/tokenizer.json").exists()
    assert not (tmp_path / "models/finetuned/training_args.bin").exists()

    plots = tmp_path / "metrics/train/plots/metrics"
    loss = (plots / "train/loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tloss" and [int(r.split("\t")[0]) for r in loss[1:]] == list(range(1, 9))
    assert [int(r.split("\t")[0]) for r in (plots / "eval/loss.tsv").read_text().splitlines()[1:]] == [4, 8]
    for name in ("train/learning_rate", "train/mean_token_accuracy", "eval/mean_token_accuracy"):
        assert (plots / f"{name}.tsv").exists(), name
    assert not list(tmp_path.rglob("dvc.yaml"))
    assert (tmp_path / "models/checkpoints/.gitignore").read_text().strip().endswith("*")


@pytest.mark.integration
def test_lora_run_is_merged_into_a_plain_model(tiny_base, formatted_sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = sample_rows(formatted_sample, "train", 4)
    data = write_formatted(tmp_path / "data", rows, rows[:1])
    params = params_file(tmp_path, dict(QUICK, **{"train.max_steps": 2, "train.lr": 1e-2, "train.lora.enabled": True,
                                                 "train.lora.target_modules": ["q_proj", "v_proj"]}))
    metrics = run_stage(tmp_path, params, data, tiny_base)

    out = tmp_path / "models/finetuned"
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    before, after = state_dict(tiny_base), state_dict(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed), changed
    assert metrics["lora"] is True and 0 < metrics["trainable_parameters"] < sum(t.numel() for t in before.values())


# ---------------------------------------------------------------- under dvc


@pytest.mark.integration
def test_dvc_repro_resumes_after_a_kill_then_is_up_to_date(tiny_base, formatted_sample, tmp_path):
    repo = make_repo(tmp_path, dict(QUICK, **{"train.max_steps": 8, "train.eval_steps": 100}), tiny_base, formatted_sample)
    killed_at = start_and_kill_after_first_checkpoint(repo, DVC + ["repro", "--single-item", "train"])
    assert killed_at and max(killed_at) < 8, f"the run was not interrupted mid-training: {killed_at}"

    out = sh(DVC + ["repro", "--single-item", "train"], repo)
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert f"resuming from checkpoint-{metrics['resumed_from_step']}" in out
    assert metrics["resumed_from_step"] in killed_at
    assert metrics["steps"] == 8 and metrics["steps_trained"] == 8 - metrics["resumed_from_step"]
    steps = [int(r.split("\t")[0]) for r in (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 9))  # history before the checkpoint kept, nothing logged twice
    assert (repo / "models/finetuned/model.safetensors").exists()
    # finished: the checkpoints are gone (train.keep_checkpoints is false), the marker says so
    assert not list((repo / "models/checkpoints").glob("checkpoint-*"))
    assert json.loads((repo / "models/checkpoints/fingerprint.json").read_text())["finished"] is True

    again = sh(DVC + ["repro", "--single-item", "train"], repo)
    assert "didn't change, skipping" in again and "Running stage" not in again
    shown = json.loads(sh(DVC + ["metrics", "show", "--json", "metrics/train.json"], repo, stdout_only=True))
    assert shown[""]["data"]["metrics/train.json"]["data"]["steps"] == 8
    plots = json.dumps(json.loads(sh(DVC + ["plots", "show", "--json"], repo, stdout_only=True)))
    for name in ("train/loss", "eval/loss", "train/mean_token_accuracy", "train/learning_rate"):
        assert f"metrics/train/plots/metrics/{name}.tsv" in plots, name


@pytest.mark.integration
def test_forced_rerun_after_a_finished_run_trains_from_the_start(tiny_base, formatted_sample, tmp_path):
    """A finished run's checkpoint and fingerprint must never be "resumed": that would train nothing and
    ship the old weights as new ones."""
    repo = make_repo(tmp_path, dict(QUICK, **{"train.max_steps": 4, "train.eval_steps": 100,
                                              "train.keep_checkpoints": True}), tiny_base, formatted_sample)
    sh(DVC + ["repro", "--single-item", "train"], repo)
    assert (repo / "models/checkpoints/checkpoint-4").is_dir()  # kept on request, and marked finished
    out = sh(DVC + ["repro", "-f", "--single-item", "train"], repo)
    assert "starting from the base model (the previous run with these inputs finished" in out
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert (metrics["resumed_from_step"], metrics["steps_trained"], metrics["steps"]) == (0, 4, 4)
    steps = [int(r.split("\t")[0]) for r in (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]  # a new history, not the old one continued


@pytest.mark.integration
def test_a_change_to_the_train_code_starts_over_instead_of_resuming(tiny_base, formatted_sample, tmp_path):
    repo = make_repo(tmp_path, dict(QUICK, **{"train.max_steps": 30, "train.eval_steps": 100}), tiny_base, formatted_sample)
    killed_at = start_and_kill_after_first_checkpoint(repo, DVC + ["repro", "--single-item", "train"])
    assert killed_at and max(killed_at) < 30, killed_at
    with open(repo / "stages/train.py", "a", encoding="utf-8") as f:
        f.write("\n# a change to the stage's code\n")
    out = sh(DVC + ["repro", "--single-item", "train"], repo)
    assert "Running stage 'train'" in out
    assert f"starting from the base model (checkpoint-{max(killed_at)} belongs to a run with other params, data, base model, code" in out
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert (metrics["resumed_from_step"], metrics["steps_trained"]) == (0, 30)


@pytest.mark.integration
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_base, formatted_sample, tmp_path, monkeypatch):
    """Interrupted right after its first checkpoint, then resumed, a run must end where one that never stopped
    ends. Tolerance: none (bitwise equal). On the CPU, with the same thread count, every kernel here is
    deterministic, and a resume restores the weights, the optimizer and scheduler state, the RNG states
    (LoRA dropout draws from them) and the position in the data order, so there is nothing left to differ."""
    rows = sample_rows(formatted_sample, "train", 8)
    data = write_formatted(tmp_path / "data", rows, rows[:2])
    params = params_file(tmp_path, dict(QUICK, **{"train.max_steps": 6, "train.lr": 1e-3, "train.lora.enabled": True,
                                                 "train.lora.target_modules": ["q_proj", "v_proj"],
                                                 "train.lora.dropout": 0.1, "train.eval_steps": 100}))
    monkeypatch.chdir(tmp_path)
    straight = run_stage(tmp_path / "straight", params, data, tiny_base)

    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt  # like Ctrl-C, right after checkpoint-2 is complete

    callbacks = train.make_callbacks
    monkeypatch.setattr(train, "make_callbacks", lambda live: [*callbacks(live), Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "resumed", params, data, tiny_base)
    assert [p.name for p in train.complete_checkpoints(tmp_path / "resumed/models/checkpoints")] == ["checkpoint-2"]
    monkeypatch.setattr(train, "make_callbacks", callbacks)
    resumed = run_stage(tmp_path / "resumed", params, data, tiny_base)

    assert (resumed["resumed_from_step"], resumed["steps_trained"], straight["steps_trained"]) == (2, 4, 6)
    a, b = state_dict(tmp_path / "straight/models/finetuned"), state_dict(tmp_path / "resumed/models/finetuned")
    assert a.keys() == b.keys()
    assert any(not (a[k] == state_dict(tiny_base)[k]).all() for k in a)  # it trained
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert resumed["train_loss"] == straight["train_loss"]


@pytest.mark.integration
def test_dvc_exp_run_set_lr_takes_effect(tmp_path):
    """The whole offline pipeline (sample rows, tiny model) under `dvc exp run -S train.lr=2e-5`."""
    repo = make_project(tmp_path, {**OFFLINE_TINY, **QUICK, "train.max_steps": 2, "train.eval_steps": 100})
    sh(DVC + ["exp", "run", "-S", "train.lr=2e-5", "train"], repo, timeout=600)
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["lr"] == 2e-5 and metrics["steps"] == 2
    assert metrics["lr_final"] < 2e-5  # cosine decay from the new peak
    exps = json.loads(sh(DVC + ["exp", "show", "--json"], repo, stdout_only=True))
    assert "2e-05" in json.dumps(exps)
    refs = [r for r in sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).split() if "/exec/" not in r]
    committed = sh(["git", "ls-tree", "-r", "--name-only", refs[0]], repo).split()
    assert "metrics/train.json" in committed and "metrics/train/plots/metrics/train/loss.tsv" in committed
    assert not [f for f in committed if f.startswith("models/")]  # checkpoints (and models) never go to git


# ---------------------------------------------------------------- accelerate


@pytest.mark.integration
def test_accelerate_launch_two_cpu_processes_train_what_one_process_trains(tiny_base, formatted_sample, tmp_path):
    """Two processes of 2 rows each (DDP over gloo) take the same optimizer steps as one process of 4 rows:
    the same rows per step, gradients averaged over all of their tokens. So the losses agree (to 1e-5) and
    the weights end the same up to float32 rounding, which AdamW turns into a full +-lr step on the few
    elements whose gradient is ~0 (m/sqrt(v) is then the sign of noise): measured, the runs differ by
    ~4e-6 on average against an update of ~1.5e-3, so each tensor's mean difference must stay under 1% of
    its mean update. A wrong data split or loss average would differ by about the update itself."""
    rows = sample_rows(formatted_sample, "train", 8)
    data = write_formatted(tmp_path / "data", rows, rows[:2])
    common = dict(QUICK, **{"train.max_steps": 2, "train.lr": 1e-3, "train.lr_scheduler": "constant",
                            "train.eval_steps": 100, "train.save_strategy": "epoch"})
    # accelerate's own multi-CPU mode needs MPI (mpirun + hostfile); its torchrun launcher (--multi_gpu) starts the
    # processes here, and on a CPU-only machine the stage joins them over gloo.
    two = tmp_path / "two"
    two.mkdir()
    sh([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "stages.train",
        "--params", str(params_file(two, dict(common, **{"train.per_device_batch_size": 2}))),
        "--data-dir", str(data), "--base-model", str(tiny_base), *STAGE_OUTPUTS], two, timeout=400)
    one = tmp_path / "one"
    one.mkdir()
    sh([sys.executable, "-m", "stages.train", "--params", str(params_file(one, dict(common, **{"train.per_device_batch_size": 4}))),
        "--data-dir", str(data), "--base-model", str(tiny_base), *STAGE_OUTPUTS], one, timeout=400)

    metrics = json.loads((two / "metrics/train.json").read_text())
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 4 and metrics["steps"] == 2
    assert json.loads((one / "metrics/train.json").read_text())["effective_batch_size"] == 4
    import torch

    a, b, base = state_dict(two / "models/finetuned"), state_dict(one / "models/finetuned"), state_dict(tiny_base)
    assert any(not torch.equal(a[k], base[k]) for k in a)
    for key in a:  # the same training, not just "a model came out"
        moved, apart = (a[key] - base[key]).abs().mean(), (a[key] - b[key]).abs().mean()
        assert apart < 0.01 * moved, f"{key}: the runs differ by {apart:.2e} on average, the update is {moved:.2e}"
    losses = [json.loads((d / "metrics/train.json").read_text()) for d in (two, one)]
    assert losses[0]["train_loss_first"] == pytest.approx(losses[1]["train_loss_first"], rel=1e-5)
    assert losses[0]["train_loss"] == pytest.approx(losses[1]["train_loss"], rel=1e-5)
    assert json.loads((two / "models/checkpoints/fingerprint.json").read_text())["finished"] is True


@pytest.mark.integration
def test_dvc_repro_trains_on_the_processes_params_yaml_asks_for(tmp_path):
    """`train.num_processes: 2`: `dvc repro train` runs the stage, which relaunches itself under accelerate with two
    processes (CPU, gloo); dvc.lock records the run with the param, and the metrics say two processes trained."""
    repo = make_project(tmp_path, {**OFFLINE_TINY, **QUICK, "train.max_steps": 2, "train.eval_steps": 100,
                                   "train.save_strategy": "epoch", "train.num_processes": 2})
    out = sh(DVC + ["repro", "train"], repo, timeout=600)
    assert "train.num_processes = 2: accelerate launch --num_processes 2" in out
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert (metrics["world_size"], metrics["effective_batch_size"], metrics["steps"]) == (2, 4, 2)
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    assert lock["params"]["params.yaml"]["train"]["num_processes"] == 2
    assert sh(DVC + ["status", "train"], repo).strip().endswith("Data and pipelines are up to date.")


def test_one_process_or_an_already_launched_run_does_not_launch_again(monkeypatch, caplog):
    monkeypatch.setattr(train.subprocess, "run", lambda *a, **kw: pytest.fail("launched"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert train.launch_processes(train_params(num_processes=1), []) is False
    monkeypatch.setenv("WORLD_SIZE", "3")  # a process of a run `accelerate launch` started by hand
    assert train.launch_processes(train_params(num_processes=2), []) is False
    assert "train.num_processes is 2, but this run was launched with 3 processes: training on 3" in caplog.text


def test_launch_follows_an_accelerate_config_or_runs_plain_ddp(tmp_path):
    from pipeline.launch import launch_command

    plain = launch_command(2, "stages.train", ["--params", "params.yaml"])
    assert plain[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
                         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "stages.train", "--params", "params.yaml"]
    config = tmp_path / "fsdp.yaml"
    configured = launch_command(4, "stages.train", [], config)
    assert configured[3:] == ["--num_processes", "4", "--num_machines", "1", "--config_file", str(config), "-m", "stages.train"]


@pytest.mark.parametrize("overrides", [
    {"packing": True, "padding_free": True},
    {"loss_type": "dft", "attn_implementation": "sdpa", "warmup_ratio": 0.5, "weight_decay": 0.1},
    {"gradient_checkpointing": True, "optim": "adamw_torch", "lr_scheduler": "linear"},
], ids=["packing", "dft-sdpa-warmup", "checkpointing-linear"])
@pytest.mark.integration
def test_options_reach_trl_and_train(tiny_base, tiny_tokenizer, tmp_path, monkeypatch, overrides, golden_expected):
    import math

    monkeypatch.chdir(tmp_path)

    examples, _, _ = train.build_examples(tiny_tokenizer, golden_expected, max_length=997)
    params = train_params(max_steps=2, per_device_batch_size=2, gradient_accumulation_steps=1, **overrides)
    config = train.sft_config(params, tmp_path / "ck", "fp32", params.optim, has_eval=False, use_cpu=True, max_length=997)
    trainer = train.build_trainer(params, tiny_base, tiny_tokenizer, examples, [], config)
    output = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(output.training_loss)
    assert (config.packing, config.padding_free, config.loss_type) == (params.packing, params.padding_free, params.loss_type)
    assert config.optim == params.optim and config.lr_scheduler_type == params.lr_scheduler
    assert trainer.model.config._attn_implementation == params.attn_implementation
    if params.packing:
        assert len(trainer.train_dataset) < len(examples)  # several examples share a row
    assert not (tmp_path / "dvclive").exists() and not (tmp_path / "dvc.yaml").exists()  # no stray dvclive logger


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padding_free_rows_attend_only_to_themselves(attn):
    """The fast default concatenates a micro-batch into one row with restarting position ids and no
    attention mask. Each example must see exactly what it sees alone, also across Gemma 3's sliding
    window (8 tokens here, shorter than the examples): per-token logits equal a one-example run."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma3ForCausalLM._from_config(config, attn_implementation=attn).eval()
    rows = [torch.randint(3, 128, (n,)) for n in (21, 13, 30)]
    with torch.no_grad():
        alone = [model(input_ids=r[None]).logits[0] for r in rows]
        packed = model(input_ids=torch.cat(rows)[None], use_cache=False,
                       position_ids=torch.cat([torch.arange(len(r)) for r in rows])[None]).logits[0]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)
