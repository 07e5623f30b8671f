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
from stages import train
from pipeline.common import UserError
from pipeline.params import ParamsError, parse_section, read_yaml
from tests.test_pipeline import set_params

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
DVC = [sys.executable, "-m", "dvc"]
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


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def golden() -> list[dict]:
    """prompt/completion pairs the real FunctionGemma chat template produced (FORMAT.md fixtures)."""
    return json.loads((FIXTURES / "functiongemma_golden_expected.json").read_text())


def text_answer_row() -> dict:
    """A formatted row whose completion is a text answer, not a call."""
    row = json.loads((FIXTURES / "functiongemma_golden_rows.jsonl").read_text().splitlines()[0])
    row["messages"] = row["messages"][:2] + [{"role": "assistant", "content": "I cannot do that."}]
    return fg.render_row(row)


def params_file(folder: Path, updates: dict[str, object]) -> Path:
    path = folder / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    set_params(path, updates)
    return path


def train_params(**overrides):
    values = read_yaml(ROOT / "params.yaml")["train"]
    for key, value in overrides.items():
        if key.startswith("lora_"):
            values["lora"] = dict(values["lora"], **{key[5:]: value})
        else:
            values[key] = value
    return parse_section("train", values)


def quick_config(params, tmp_path: Path):
    return train.sft_config(params, tmp_path / "ck", "fp32", "adamw_torch", has_eval=False, use_cpu=True)


def write_formatted(folder: Path, train_rows: list[dict], eval_rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"prompt": row["prompt"], "completion": row["completion"]}) + "\n")
    return folder


def sample_rows(formatted: Path, split: str, n: int) -> list[dict]:
    lines = (formatted / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:n]]


def run_stage(workdir: Path, params: Path, data: Path, base: Path) -> dict:
    """The stage in this process, as dvc.yaml's cmd calls it; returns metrics/train.json."""
    train.main(["--params", str(params), "--data-dir", str(data), "--base-model", str(base),
                "--out-dir", str(workdir / "models/finetuned"), "--checkpoint-dir", str(workdir / "models/checkpoints"),
                "--metrics", str(workdir / "metrics/train.json"), "--live-dir", str(workdir / "metrics/train")])
    return json.loads((workdir / "metrics/train.json").read_text())


def state_dict(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
                PYTHONPATH=str(ROOT))


def sh(cmd: list[str], cwd: Path, timeout: int = 300, stdout_only: bool = False) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env())
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout if stdout_only else result.stdout + result.stderr


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
    sh(["git", "init", "-q"], repo)
    sh(["git", "config", "user.email", "ci@example.com"], repo)
    sh(["git", "config", "user.name", "ci"], repo)
    sh(DVC + ["init", "-q"], repo)
    sh(DVC + ["config", "core.analytics", "false"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "project"], repo)
    shutil.copytree(tiny_base, repo / "models/base")
    write_formatted(repo / "data/formatted", sample_rows(formatted_sample, "train", 8), sample_rows(formatted_sample, "eval", 2))
    return repo


# ---------------------------------------------------------------- token-exact examples


def test_tokenized_example_has_one_bos_masked_prompt_and_ends_on_the_stop_token(tiny_base, tokenizer, tmp_path, monkeypatch):
    """What the trainer trains on, read back from TRL's prepared dataset, for the golden rows."""
    monkeypatch.chdir(tmp_path)
    from transformers import GenerationConfig

    names = [fg.BOS, fg.EOS, fg.END_OF_TURN, fg.START_CALL, fg.START_RESPONSE]
    assert tokenizer.convert_tokens_to_ids(names) == [BOS_ID, EOS_ID, END_OF_TURN_ID, START_CALL_ID, START_RESPONSE_ID]
    stops = GenerationConfig.from_pretrained(tiny_base).eos_token_id  # what generation stops on
    rows = [*golden(), text_answer_row()]
    examples, truncated, dropped = train.build_examples(tokenizer, rows, max_length=997)
    trainer = train.build_trainer(train_params(), tiny_base, tokenizer, examples, [], quick_config(train_params(), tmp_path))

    for row, prepared in zip(rows, trainer.train_dataset):
        ids, labels = prepared["input_ids"], prepared["labels"]
        start = next(i for i, label in enumerate(labels) if label != -100)  # first trained position
        assert ids[0] == BOS_ID and ids.count(BOS_ID) == 1
        assert EOS_ID not in ids
        assert all(label == -100 for label in labels[:start]) and labels[start:] == ids[start:]
        assert tokenizer.decode(ids[:start]) == row["prompt"]  # the prompt the runtime prefills, byte for byte
        assert tokenizer.decode(ids[start:]) == row["completion"]
        assert ids == tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
    calls = list(trainer.train_dataset)[: len(golden())]
    assert all(ex["input_ids"][-1] == START_RESPONSE_ID for ex in calls)  # ends on <start_function_response>, no <eos>
    assert all(ex["input_ids"][next(i for i, x in enumerate(ex["labels"]) if x != -100)] == START_CALL_ID for ex in calls)
    text = trainer.train_dataset[len(rows) - 1]["input_ids"]
    assert text[-2] == END_OF_TURN_ID and tokenizer.decode(text[-1:]) == "\n"  # a text answer: <end_of_turn>\n
    assert START_RESPONSE_ID in stops and END_OF_TURN_ID in stops  # each completion ends on a token the runtime stops on
    assert (truncated, dropped) == (0, 0)
    # the trap this avoids: the tokenizer's default call adds a second <bos> to our prompts
    assert tokenizer(rows[0]["prompt"])["input_ids"][:2] == [BOS_ID, BOS_ID]


def test_long_examples_are_cut_and_prompt_only_ones_dropped(tokenizer):
    row = golden()[0]
    prompt_len = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
    examples, truncated, dropped = train.build_examples(tokenizer, [row, row], max_length=prompt_len + 3)
    assert (truncated, dropped) == (2, 0)
    assert all(len(ex["input_ids"]) == prompt_len + 3 and sum(ex["completion_mask"]) == 3 for ex in examples)
    assert train.build_examples(tokenizer, [row], max_length=prompt_len)[1:] == (1, 1)


def test_prompt_without_bos_gets_exactly_one(tokenizer):
    row = golden()[0]
    ex = train.tokenize_example(tokenizer, row["prompt"].removeprefix(fg.BOS), row["completion"])
    assert ex["input_ids"][0] == BOS_ID and ex["input_ids"].count(BOS_ID) == 1


# ---------------------------------------------------------------- loss paths give the same loss


def _batch_loss(trainer) -> float:
    import torch

    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def test_skip_prompt_logits_and_padding_free_keep_the_loss(tiny_base, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples, _, _ = train.build_examples(tokenizer, golden(), max_length=997)  # different lengths: padding matters
    params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False)
    trainer = train.build_trainer(params, tiny_base, tokenizer, examples, [], quick_config(params, tmp_path))
    train.score_only_loss_positions(False)
    reference = _batch_loss(trainer)  # every position through the output layer (TRL's CPU path)
    train.score_only_loss_positions(True)
    compact = _batch_loss(trainer)
    params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False, padding_free=True)
    padding_free = _batch_loss(train.build_trainer(params, tiny_base, tokenizer, examples, [], quick_config(params, tmp_path)))
    assert reference > 5  # a random model: about ln(262144) = 12.5 per token
    assert compact == pytest.approx(reference, rel=1e-5)
    assert padding_free == pytest.approx(reference, rel=1e-4)  # examples stay apart without padding


# ---------------------------------------------------------------- params and run settings


@pytest.mark.parametrize("overrides, key", [
    ({"packing": True, "padding_free": False}, "train.packing"),
    ({"max_steps": 0}, "train.max_steps"),
    ({"warmup_ratio": 1.0}, "train.warmup_ratio"),
    ({"lora_enabled": True, "lora_target_modules": []}, "train.lora.target_modules"),
    ({"lora_enabled": True, "lora_target_modules": ["q_proj", "lm_head"]}, "train.lora.target_modules"),
    ({"loss_type": "chunked_nll"}, "train.loss_type"),
])
def test_invalid_combinations_fail_at_load_time(overrides, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        train_params(**overrides)


def test_precision_and_optimizer_follow_the_hardware():
    assert train.resolve_precision("auto", "cuda", True) == "bf16"
    assert train.resolve_precision("auto", "cuda", False) == "fp32"
    assert train.resolve_precision("auto", "cpu", False) == "fp32"
    assert train.resolve_precision("auto", "cpu", True) == "bf16"  # AVX512-BF16 / AMX
    assert train.resolve_precision("auto", "mps", True) == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        train.resolve_precision("fp16", "cpu", False)
    assert train.resolve_optim("adamw_torch_fused", "cpu") == "adamw_torch_fused"
    assert train.resolve_optim("adamw_torch_fused", "neuron") == "adamw_torch"


def test_fingerprint_changes_with_params_data_and_processes():
    base = train.fingerprint(train_params(), {"data": "a"}, 1)
    assert base == train.fingerprint(train_params(), {"data": "a"}, 1)
    assert base != train.fingerprint(train_params(lr=2e-5), {"data": "a"}, 1)
    assert base != train.fingerprint(train_params(), {"data": "b"}, 1)
    assert base != train.fingerprint(train_params(), {"data": "a"}, 2)


def test_live_metric_names():
    assert train.live_metric_name("loss") == "train/loss"
    assert train.live_metric_name("eval_loss") == "eval/loss"
    assert train.live_metric_name("mean_token_accuracy") == "train/mean_token_accuracy"
    assert train.live_metric_name("eval_mean_token_accuracy") == "eval/mean_token_accuracy"
    assert train.live_metric_name("learning_rate") == "train/learning_rate"
    assert train.live_metric_name("eval_runtime") is None and train.live_metric_name("epoch") is None


# ---------------------------------------------------------------- training runs (in process)


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
    assert metrics["lr"] == 1e-2 and metrics["precision"] == ("bf16" if train.native_bf16("cpu") else "fp32") and metrics["device"] == "cpu"
    assert metrics["train_tokens"] > 0 and metrics["train_tokens_per_second"] > 0 and metrics["peak_memory_gb"] > 0
    for key in ("version_torch", "version_transformers", "version_trl", "version_peft", "runtime_seconds",
                "samples_per_second", "eval_loss", "optim"):
        assert metrics[key] not in (None, "not installed"), key
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())  # flat keys

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


def test_dvc_repro_resumes_after_a_kill_then_is_up_to_date(tiny_base, formatted_sample, tmp_path):
    repo = make_repo(tmp_path, dict(QUICK, **{"train.max_steps": 8, "train.eval_steps": 100}), tiny_base, formatted_sample)
    ckpt = repo / "models/checkpoints"
    first = subprocess.Popen(DVC + ["repro", "--single-item", "train"], cwd=repo, env=env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not train.complete_checkpoints(ckpt) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # dvc and the stage it runs, right after the first checkpoint
    first.wait()
    killed_at = [int(p.name.split("-")[-1]) for p in train.complete_checkpoints(ckpt)]
    assert killed_at and max(killed_at) < 8, f"the run was not interrupted mid-training: {killed_at}"

    out = sh(DVC + ["repro", "--single-item", "train"], repo)
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert f"resuming from checkpoint-{metrics['resumed_from_step']}" in out
    assert metrics["resumed_from_step"] in killed_at
    assert metrics["steps"] == 8  # the same step count as an uninterrupted run
    steps = [int(r.split("\t")[0]) for r in (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 9))  # history before the checkpoint kept, nothing logged twice
    assert (repo / "models/finetuned/model.safetensors").exists()

    again = sh(DVC + ["repro", "--single-item", "train"], repo)
    assert "didn't change, skipping" in again and "Running stage" not in again
    shown = json.loads(sh(DVC + ["metrics", "show", "--json", "metrics/train.json"], repo, stdout_only=True))
    assert shown[""]["data"]["metrics/train.json"]["data"]["steps"] == 8
    plots = json.dumps(json.loads(sh(DVC + ["plots", "show", "--json"], repo, stdout_only=True)))
    for name in ("train/loss", "eval/loss", "train/mean_token_accuracy", "train/learning_rate"):
        assert f"metrics/train/plots/metrics/{name}.tsv" in plots, name


def test_dvc_exp_run_set_lr_takes_effect(tmp_path):
    """The whole offline pipeline (sample rows, tiny model) under `dvc exp run -S train.lr=2e-5`."""
    from tests.test_pipeline import OFFLINE_TINY, make_project

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


def test_accelerate_launch_two_cpu_processes(tiny_base, formatted_sample, tmp_path):
    rows = sample_rows(formatted_sample, "train", 8)
    data = write_formatted(tmp_path / "data", rows, rows[:2])
    params = params_file(tmp_path, dict(QUICK, **{"train.max_steps": 2}))
    # accelerate's own multi-CPU mode needs MPI (mpirun + hostfile); its torchrun launcher (--multi_gpu) starts the
    # processes here, and on a CPU-only machine the stage joins them over gloo.
    sh([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "stages.train", "--params", str(params),
        "--data-dir", str(data), "--base-model", str(tiny_base), "--out-dir", "models/finetuned",
        "--checkpoint-dir", "models/checkpoints", "--metrics", "metrics/train.json", "--live-dir", "metrics/train"],
       tmp_path, timeout=400)
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 4 and metrics["steps"] == 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "models/finetuned")


@pytest.mark.parametrize("overrides", [
    {"packing": True, "padding_free": True},
    {"loss_type": "dft", "attn_implementation": "sdpa", "warmup_ratio": 0.5, "weight_decay": 0.1},
    {"gradient_checkpointing": True, "optim": "adamw_torch", "lr_scheduler": "linear"},
], ids=["packing", "dft-sdpa-warmup", "checkpointing-linear"])
def test_options_reach_trl_and_train(tiny_base, tokenizer, tmp_path, monkeypatch, overrides):
    import math

    monkeypatch.chdir(tmp_path)

    examples, _, _ = train.build_examples(tokenizer, golden(), max_length=997)
    params = train_params(max_steps=2, per_device_batch_size=2, gradient_accumulation_steps=1, **overrides)
    config = train.sft_config(params, tmp_path / "ck", "fp32", params.optim, has_eval=False, use_cpu=True)
    trainer = train.build_trainer(params, tiny_base, tokenizer, examples, [], config)
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
