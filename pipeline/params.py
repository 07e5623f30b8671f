"""Typed, validated parameters: one frozen dataclass per `params.yaml` section.

    from pipeline.params import load_params
    data, model = load_params("data", "model")          # reads params.yaml

`params.yaml` is the single source of values (the dataclasses carry no
defaults). Loading checks every key before any heavy work and reports every
problem at once, naming the key: unknown keys, missing keys, wrong types,
out-of-range values and invalid combinations.

The file is read with ruamel (YAML 1.2), the parser DVC itself uses, so a value
written by `dvc exp run -S train.lr=2e-5` (which lands as `2e-05`) is a float;
PyYAML would read it as a string. Numeric strings given for float/int keys are
converted too, so a hand-edited `"1e-5"` also works.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.common import UserError

PARAMS_FILE = "params.yaml"


class ParamsError(UserError):
    """One message listing every bad key."""


def ranged(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Any:
    """Field metadata for a numeric range check: lo <= value <= hi (lo < value if lo_open)."""
    return field(metadata={"lo": lo, "hi": hi, "lo_open": lo_open})


# ---------------------------------------------------------------- sections


ROW_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


@dataclass(frozen=True)
class HubSplitFiles:
    """One file (a name or a glob) per split in the hub repo, instead of data.hub_file."""

    train: str
    eval: str


@dataclass(frozen=True)
class DataParams:
    """Where the rows come from (fetch stage) and what shape they have (format stage)."""

    source: Literal["hub", "local", "sample"]
    hub_repo: str
    hub_file: str
    hub_split_files: HubSplitFiles
    revision: str
    path: str
    schema: Literal["auto", "mobile_actions", "openai", "xlam"]

    def check(self) -> list[str]:
        errors = []
        if self.source in ("local", "sample") and not self.path:
            errors.append(f"data.path: must name a JSONL/JSON/Parquet file or folder when data.source is {self.source!r}")
        split_files = (self.hub_split_files.train, self.hub_split_files.eval)
        if any(split_files) and not all(split_files):
            errors.append("data.hub_split_files: give both train and eval (or neither, to use data.hub_file)")
        if self.source == "hub" and not (self.hub_repo and (self.hub_file or all(split_files)) and self.revision):
            errors.append("data.hub_repo, data.hub_file (or data.hub_split_files) and data.revision must all be set when data.source is 'hub'")
        for key, name in (("hub_file", self.hub_file), ("hub_split_files.train", split_files[0]),
                          ("hub_split_files.eval", split_files[1])):
            if name and not _is_glob(name) and not name.lower().endswith(ROW_FILE_SUFFIXES):
                errors.append(f"data.{key}: {name!r} must be a .jsonl, .json or .parquet file, or a glob such as data/*.parquet")
        return errors


@dataclass(frozen=True)
class TinyModelParams:
    """A tiny random Gemma 3 with the real tokenizer, for tests."""

    hidden_size: int = ranged(8)
    intermediate_size: int = ranged(8)
    num_hidden_layers: int = ranged(1)
    num_attention_heads: int = ranged(1)
    num_key_value_heads: int = ranged(1)
    head_dim: int = ranged(4)
    seed: int = ranged(0)

    def check(self) -> list[str]:
        if self.num_attention_heads % self.num_key_value_heads:
            return ["model.tiny.num_attention_heads must be a multiple of model.tiny.num_key_value_heads"]
        return []


@dataclass(frozen=True)
class ModelParams:
    """Which base model the fetch stage writes to models/base/."""

    source: Literal["hub", "local", "gguf", "tiny"]
    hub_repo: str
    revision: str
    path: str
    tiny: TinyModelParams

    def check(self) -> list[str]:
        if self.source == "local" and not self.path:
            return ["model.path: must name a Hugging Face model folder when model.source is 'local'"]
        return []


@dataclass(frozen=True)
class FormatParams:
    on_invalid: Literal["error", "skip"]
    on_leak: Literal["warn", "drop_from_train", "error"]
    eval_fraction: float = ranged(0.0, 1.0)
    split_seed: int = ranged(0)
    stratify_min_requests: int = ranged(2)
    max_row_bytes: int = ranged(1024)
    xlam_developer_text: str
    max_length: int = ranged(16)
    drop_over_length: bool
    validation_rows: int = ranged(0)

    def check(self) -> list[str]:
        if self.eval_fraction >= 1.0:
            return ["format.eval_fraction: must be below 1 (it is the share of rows without a split that go to eval)"]
        return []


@dataclass(frozen=True)
class LoraParams:
    enabled: bool
    r: int = ranged(1)
    alpha: float = ranged(0.0, lo_open=True)
    dropout: float = ranged(0.0, 1.0)
    target_modules: list[str]


@dataclass(frozen=True)
class TrainParams:
    epochs: float = ranged(0.0, lo_open=True)
    max_steps: int = ranged(-1)
    per_device_batch_size: int = ranged(1)
    gradient_accumulation_steps: int = ranged(1)
    lr: float = ranged(0.0, 1.0, lo_open=True)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"]
    warmup_ratio: float = ranged(0.0, 1.0)
    weight_decay: float = ranged(0.0, 1.0)
    optim: Literal["adamw_torch_fused", "adamw_torch"]
    gradient_checkpointing: bool
    packing: bool
    padding_free: bool
    loss_type: Literal["nll", "dft"]
    skip_prompt_logits: bool
    detach_developer_turn: bool
    developer_turn_precision: Literal["auto", "bf16", "fp32"]
    attn_implementation: Literal["eager", "sdpa"]
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    eval_steps: int = ranged(1)
    eval_rows: int = ranged(0)
    save_strategy: Literal["epoch", "steps"]
    save_steps: int = ranged(1)
    save_total_limit: int = ranged(1)
    keep_checkpoints: bool
    logging_steps: int = ranged(1)
    seed: int = ranged(0)
    torch_compile: bool
    num_processes: int = ranged(1)
    lora: LoraParams

    def check(self) -> list[str]:
        errors = []
        if self.max_steps == 0:
            errors.append("train.max_steps: use -1 (train for train.epochs) or a positive number of optimizer steps, not 0")
        if self.warmup_ratio >= 1.0:
            errors.append("train.warmup_ratio: must be below 1 (it is the fraction of all steps spent warming up)")
        if self.packing and not self.padding_free:
            errors.append("train.packing: needs train.padding_free: true (packed sequences must not attend across examples)")
        if self.detach_developer_turn and (self.padding_free or self.gradient_checkpointing):
            errors.append("train.detach_developer_turn: runs the developer turn into a KV cache, which needs padded rows "
                          "(train.padding_free: false) and no recomputation (train.gradient_checkpointing: false)")
        if self.lora.enabled and not self.lora.target_modules:
            errors.append("train.lora.target_modules: name at least one module (or 'all-linear') when LoRA is enabled")
        if self.lora.enabled and "lm_head" in self.lora.target_modules:
            errors.append("train.lora.target_modules: remove lm_head (TRL scores tokens with lm_head.weight directly, so an adapter there would never train)")
        if self.lora.enabled and "all-linear" in self.lora.target_modules and len(self.lora.target_modules) > 1:
            errors.append("train.lora.target_modules: 'all-linear' already covers every linear layer; give it alone")
        return errors


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = ranged(1)
    max_new_tokens: int = ranged(1)
    limit: int = ranged(0)
    compare_base: bool
    base_limit: int = ranged(0)
    base_max_new_tokens: int = ranged(0)
    precision: Literal["auto", "fp32", "bf16"]
    prefill_batch: int = ranged(0)
    split: Literal["eval", "validation"]


@dataclass(frozen=True)
class ConvertParams:
    quantize: Literal["dynamic_int8", "dynamic_int4_block32", "weight_only_int8", "none"]
    prefill_seq_lens: list[int]
    kv_cache_max_len: int = ranged(16)
    limit: int = ranged(0)
    max_exact_match_drop: float = ranged(0.0, 100.0)
    min_call_agreement: float = ranged(0.0, 1.0)
    constrained_decoding: bool
    runtime_threads: int = ranged(0)
    output_name: str
    export_tflite: bool
    keep_intermediate: bool

    def check(self) -> list[str]:
        errors = []
        if not self.prefill_seq_lens or any(n < 1 for n in self.prefill_seq_lens):
            errors.append("convert.prefill_seq_lens: give at least one positive prefill length, e.g. [256]")
        elif max(self.prefill_seq_lens) >= self.kv_cache_max_len:
            errors.append("convert.kv_cache_max_len must be larger than every convert.prefill_seq_lens entry")
        if not self.output_name or "/" in self.output_name or self.output_name.startswith("."):
            errors.append("convert.output_name: give a plain file name without '/' or a leading '.', e.g. functiongemma-finetuned")
        return errors


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "model": ModelParams,
    "format": FormatParams,
    "train": TrainParams,
    "eval": EvalParams,
    "convert": ConvertParams,
}


# ---------------------------------------------------------------- loading


def read_yaml(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Parse a params file with YAML 1.2 semantics (as DVC writes it)."""
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root or pass --params PATH")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections (data:, model:, train: ...)")
    return raw


def load_params(*sections: str, path: str | Path = PARAMS_FILE) -> Any:
    """Load and validate the named sections; one section returns its object, several a tuple."""
    raw = read_yaml(path)
    errors: list[str] = []
    loaded = []
    for name in sections:
        if name not in SECTIONS:
            raise ValueError(f"unknown params section {name!r}")  # a programming error, not a user one
        if name not in raw or not isinstance(raw[name], dict):
            errors.append(f"{name}: section missing from {path}")
            loaded.append(None)
            continue
        obj, errs = build(SECTIONS[name], raw[name], name)
        errors.extend(errs)
        loaded.append(obj)
    if errors:
        raise ParamsError(f"invalid parameters in {path}: " + "; ".join(errors))
    return loaded[0] if len(loaded) == 1 else tuple(loaded)


def parse_section(name: str, values: dict[str, Any]) -> Any:
    """Validate one section given as a dict (for tests and overrides)."""
    obj, errors = build(SECTIONS[name], values, name)
    if errors:
        raise ParamsError("invalid parameters: " + "; ".join(errors))
    return obj


def build(cls: type, values: Any, prefix: str) -> tuple[Any, list[str]]:
    """Build `cls` from a dict, returning (object or None, every error found)."""
    if not isinstance(values, dict):
        return None, [f"{prefix}: expected a mapping, got {_show(values)}"]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors = [f"{prefix}.{key}: unknown key (known: {', '.join(fields)})" for key in values if key not in fields]
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in values:
            errors.append(f"{key}: missing")
            continue
        value, errs = _convert(hints[name], values[name], key)
        if not errs:
            errs = _check_range(f, value, key)
        errors.extend(errs)
        kwargs[name] = value
    if errors:
        return None, errors
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        errors.extend(check())
    return (obj if not errors else None), errors


def _convert(hint: Any, value: Any, key: str) -> tuple[Any, list[str]]:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value, []
        return value, [f"{key}: must be one of {', '.join(map(str, choices))}, got {_show(value)}"]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return value, [f"{key}: expected a list of {item.__name__}, got {_show(value)}"]
        out, errors = [], []
        for i, v in enumerate(value):
            converted, errs = _convert(item, v, f"{key}[{i}]")
            out.append(converted)
            errors.extend(errs)
        return out, errors
    if hint is bool:
        if isinstance(value, bool):
            return value, []
        return value, [f"{key}: expected true or false, got {_show(value)}"]
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, []
        if isinstance(value, float) and value.is_integer():
            return int(value), []
        if isinstance(value, str):
            try:
                return int(value.strip()), []
            except ValueError:
                pass
        return value, [f"{key}: expected an integer, got {_show(value)}"]
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), []
        if isinstance(value, str):
            try:
                return float(value.strip()), []
            except ValueError:
                pass
        return value, [f"{key}: expected a number, got {_show(value)}"]
    if hint is str:
        if isinstance(value, str):
            return value, []
        if value is None:
            return "", []
        return value, [f"{key}: expected a string, got {_show(value)}"]
    raise TypeError(f"unsupported param type {hint!r} for {key}")  # programming error


def _check_range(f: dataclasses.Field, value: Any, key: str) -> list[str]:
    lo, hi, lo_open = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("lo_open", False)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return []
    if lo is not None and (value <= lo if lo_open else value < lo):
        return [f"{key}: must be {'>' if lo_open else '>='} {lo}, got {value}"]
    if hi is not None and value > hi:
        return [f"{key}: must be <= {hi}, got {value}"]
    return []


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def as_dict(obj: Any) -> dict[str, Any]:
    """A params object as a plain dict (for model cards and run records)."""
    return dataclasses.asdict(obj)
