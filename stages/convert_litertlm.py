"""Convert the fine-tuned model into a `.litertlm` bundle for phones, and prove it works by running it.

    dvc repro convert_litertlm        (or: make convert)
    python -m stages.convert_litertlm --params params.yaml --model models/finetuned \
        --eval-data data/formatted/eval.jsonl --out-dir models/litertlm --metrics metrics/convert.json

Reads `models/finetuned/` (a Hugging Face Gemma 3 text folder: safetensors, tokenizer)
and the first `convert.verify_examples` rows of `data/formatted/eval.jsonl`.
Writes `models/litertlm/<convert.output_name>.litertlm` (for the Google AI Edge
Gallery app and the LiteRT-LM runtime), optionally `<output_name>.tflite` and
`intermediate/`, and `metrics/convert.json`.

How it converts: litert-torch's `export_hf` exporter traces the model with the
Hugging Face modeling code itself (no re-authored copy of Gemma 3, so no
hand-mapped tensor names that could silently mismatch), writes one TFLite model
with prefill signatures of `convert.prefill_seq_lens` tokens and a decode
signature over a KV cache of `convert.kv_cache_max_len`, quantizes the weights
(`convert.quantize`, see QUANT_RECIPES), and packs it with the model's own
tokenizer and FunctionGemma's runtime metadata (`llm_metadata`): start token
`<bos>`, stop tokens `<start_function_response>`, `<end_of_turn>`, `<eos>`,
model type `function_gemma`, and the user/model turn markers.

How it verifies: the bundle is loaded by the LiteRT-LM runtime (`litert-lm-api`)
on the CPU, the verify prompts run through it greedily, and its answers are
compared with the PyTorch model's greedy answers (float32 on the CPU) on the
same prompts. A prompt agrees when both give the same parsed answer: the same
calls, and the same text when there is any. An agreement below
`convert.min_agreement` fails the stage (a silently broken export must never
pass) and the bundle is deleted. The runtime's XNNPACK weight cache (as large as
the model) goes to a temporary folder, never into `models/litertlm/`.

TensorFlow: litert-torch 0.10 imports `tensorflow.lite.python.schema_py_generated`
(the TFLite flatbuffer schema) at import time without declaring TensorFlow as a
dependency. Rather than install all of TensorFlow for one generated file, the
import is pointed at the copy of that schema that `ai-edge-litert` (a declared
dependency of litert-torch) ships; see `tflite_schema_alias`. An installed
TensorFlow is used as is.

Measured on this repo's 2-core CPU with the real Gemma 3 270M: conversion 85-100 s at
about 6 GB peak memory; the bundle is 285.6 MB with dynamic_int8 (1080 MB with none);
the runtime then prefills about 1100 tokens/s and decodes about 60 tokens/s (int8).
With `quantize: none` the runtime's greedy text equals PyTorch's on all 20 verify
prompts (128 tokens each), so the export itself is exact; quantization is what can
make answers drift.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline import functiongemma as fg
from pipeline.common import UserError, package_versions, read_jsonl, run_main, run_record, write_json
from pipeline.params import ConvertParams, load_params

log = logging.getLogger("convert")

# convert.quantize -> the ai-edge-quantizer recipe litert-torch's export_hf applies to the TFLite model.
# Left out: the static int8/int16-activation recipes (they need a calibration set), float16 weights
# (export_hf offers none), and export_hf's dynamic_wi8_emb4_afp32, which made the 270M bigger
# (456 MB against 285 MB for dynamic_int8).
QUANT_RECIPES: dict[str, str] = {
    "dynamic_int8": "dynamic_wi8_afp32",  # int8 weights per channel, activations quantized on the fly
    "dynamic_int4_block32": "dynamic_wi4b32_afp32",  # int4 weights in blocks of 32 (159 MB for the 270M)
    "weight_only_int8": "weight_only_wi8_afp32",  # int8 weights, dequantized to float for compute
    "none": "none",  # float32 weights
}

SUPPORTED_MODEL_TYPES = ("gemma3_text",)  # FunctionGemma is a Gemma 3 text model (Gemma3ForCausalLM)
RUNTIME_MODEL_TYPE = "function_gemma"  # LiteRT-LM's model type for FunctionGemma (tool-call handling)

SHOW_DIFFERENCES = 5  # differing verify answers printed to the log

# Peak memory of a conversion, measured here: 6.1 GB for the 270M (268M parameters, 1.07 GB as
# float32) and 1.4 GB for the tiny test model (17M parameters). The estimate
# 1.2 GB + 5 x (float32 weight bytes) covers both with a margin (6.6 GB and 1.5 GB).
MEMORY_BASE_BYTES = int(1.2e9)
MEMORY_PER_FLOAT32_BYTE = 5.0


# --------------------------------------------------------------------------- checks before any work


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """config.json of the model folder; a missing or foreign model is a UserError."""
    if not (model_dir / "config.json").exists():
        raise UserError(
            f"no fine-tuned model in {model_dir} (no config.json): run `dvc repro train` first, "
            "or pass --model with a Hugging Face Gemma 3 model folder"
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type", "unknown")
    if model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise UserError(
            f"{model_dir} holds a {model_type!r} model ({arch}), which this stage cannot convert: "
            f"it builds FunctionGemma bundles from Gemma 3 text models ({', '.join(SUPPORTED_MODEL_TYPES)}) only"
        )
    if not list(model_dir.glob("*.safetensors")):
        raise UserError(f"{model_dir} has no *.safetensors weights: point --model at a complete model folder")
    if not (model_dir / "tokenizer.json").exists():
        raise UserError(f"{model_dir} has no tokenizer.json: the bundle must carry the model's own tokenizer")
    return config


def count_parameters(model_dir: Path) -> int:
    """Number of weights in the folder's safetensors files (read from the headers only)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def conversion_memory_bytes(num_parameters: int) -> int:
    """Estimated peak memory of converting a model of this size (the model is traced in float32)."""
    return MEMORY_BASE_BYTES + int(MEMORY_PER_FLOAT32_BYTE * 4 * num_parameters)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(needed: int, available: int | None) -> None:
    if available is not None and available < needed:
        raise UserError(
            f"not enough memory to convert: the export needs about {needed / 1e9:.1f} GB but only "
            f"{available / 1e9:.1f} GB is available; stop other jobs or run on a machine with more memory"
        )


def read_eval_rows(path: Path, count: int) -> list[dict]:
    """The first `count` rows of a formatted eval file, in file order (the same rows on every run)."""
    if not path.exists():
        raise UserError(f"{path} not found: run `dvc repro format` first, or pass --eval-data with a formatted eval.jsonl")
    rows, bad = [], []
    for number, row, error in read_jsonl(path):
        if row is None or "prompt" not in row or "target_calls" not in row:
            bad.append(f"line {number}: {error or 'no prompt/target_calls'}")
            continue
        rows.append(row)
        if len(rows) == count:
            break
    if bad:
        raise UserError(f"{path} is not a formatted eval file ({'; '.join(bad[:3])}): regenerate it with `dvc repro format`")
    if not rows:
        raise UserError(f"{path} has no rows to verify the converted model with: the eval split is empty")
    return rows


def check_prompt_lengths(model_dir: Path, rows: list[dict], params: ConvertParams) -> None:
    """Every verify prompt plus its answer budget must fit the KV cache (the runtime refuses more)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    room = params.kv_cache_max_len - params.verify_max_new_tokens
    for row in rows:
        length = len(tokenizer.encode(row["prompt"], add_special_tokens=False).ids)
        if length > room:
            raise UserError(
                f"eval line {row.get('line', '?')} has a {length}-token prompt, which with "
                f"convert.verify_max_new_tokens {params.verify_max_new_tokens} does not fit "
                f"convert.kv_cache_max_len {params.kv_cache_max_len}: raise kv_cache_max_len (phones need the room too)"
            )


# --------------------------------------------------------------------------- metadata


def build_llm_metadata(kv_cache_max_len: int):
    """FunctionGemma's LiteRT-LM metadata (the proto the runtime and the Gallery app read)."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2, llm_model_type_pb2

    meta = llm_metadata_pb2.LlmMetadata()
    meta.start_token.token_str = fg.BOS  # the runtime prepends it to every prompt
    for token in fg.STOP_TOKENS:  # <start_function_response> ends calls, <end_of_turn> text answers
        meta.stop_tokens.add().token_str = token
    meta.prompt_templates.user.prefix = fg.START_OF_TURN + "user\n"
    meta.prompt_templates.user.suffix = fg.END_OF_TURN + "\n"
    meta.prompt_templates.model.prefix = fg.START_OF_TURN + "model\n"
    meta.prompt_templates.model.suffix = fg.END_OF_TURN + "\n"
    meta.llm_model_type.CopyFrom(llm_model_type_pb2.LlmModelType(function_gemma=llm_model_type_pb2.FunctionGemma()))
    meta.max_num_tokens = kv_cache_max_len
    return meta


def read_llm_metadata(bundle: Path):
    """The LlmMetadata proto stored in a .litertlm file (via litert-lm-builder's reader)."""
    import io

    from litert_lm_builder import litertlm_header_schema_py_generated as schema
    from litert_lm_builder import litertlm_peek
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    header = litertlm_peek.read_litertlm_header(str(bundle), io.StringIO())
    sections = header.SectionMetadata()
    for i in range(sections.ObjectsLength() if sections else 0):
        section = sections.Objects(i)
        if section.DataType() == schema.AnySectionDataType.LlmMetadataProto:
            with open(bundle, "rb") as f:
                f.seek(section.BeginOffset())
                data = f.read(section.EndOffset() - section.BeginOffset())
            meta = llm_metadata_pb2.LlmMetadata()
            meta.ParseFromString(data)
            return meta
    raise ValueError(f"{bundle} has no LlmMetadata section")


def describe_metadata(meta) -> dict[str, Any]:
    """The fields that matter to the runtime, as plain values."""
    return {
        "start_token": meta.start_token.token_str or list(meta.start_token.token_ids.ids),
        "stop_tokens": [t.token_str or list(t.token_ids.ids) for t in meta.stop_tokens],
        "model_type": meta.llm_model_type.WhichOneof("model_type"),
        "max_num_tokens": meta.max_num_tokens,
    }


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def tflite_schema_alias() -> Iterator[None]:
    """Let `from tensorflow.lite.python import schema_py_generated` resolve to ai-edge-litert's copy.

    Only for the duration of the block (the import of litert-torch), and only when TensorFlow
    itself is not installed; the stand-in package modules are removed afterwards, so nothing
    else in the process sees a fake TensorFlow.
    """
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    from ai_edge_litert import schema_py_generated

    added = []
    for name in ("tensorflow", "tensorflow.lite", "tensorflow.lite.python"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        sys.modules[name] = module
        added.append(name)
    sys.modules["tensorflow.lite.python"].schema_py_generated = schema_py_generated
    sys.modules["tensorflow.lite.python.schema_py_generated"] = schema_py_generated
    added.append("tensorflow.lite.python.schema_py_generated")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def export_bundle(model_dir: Path, work_dir: Path, params: ConvertParams) -> Path:
    """Run litert-torch's export_hf into `work_dir` (which keeps every file it writes); returns the bundle."""
    metadata_path = work_dir / "llm_metadata.pb"
    metadata_path.write_bytes(build_llm_metadata(params.kv_cache_max_len).SerializeToString())
    # litert-torch reports its progress (and its import its warnings) with print(): send them to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        with tflite_schema_alias():
            from litert_torch.generative.export_hf import export as export_hf

        export_hf.export(
            model=str(model_dir),
            output_dir=str(work_dir),
            prefill_lengths=list(params.prefill_seq_lens),
            cache_length=params.kv_cache_max_len,
            quantization_recipe=QUANT_RECIPES[params.quantize],
            litert_lm_llm_metadata_override=str(metadata_path),
            keep_temporary_files=True,
        )
    bundle = work_dir / "model.litertlm"
    if not bundle.exists():
        raise RuntimeError(f"litert-torch reported success but wrote no {bundle}")
    return bundle


def convert(model_dir: Path, work_dir: Path, params: ConvertParams) -> Path:
    """export_bundle, with running out of memory turned into one clear sentence."""
    try:
        return export_bundle(model_dir, work_dir, params)
    except MemoryError:
        raise UserError(
            "the conversion ran out of memory: stop other jobs or run on a machine with more memory"
        ) from None
    except RuntimeError as err:
        if "can't allocate memory" in str(err) or "out of memory" in str(err).lower():
            raise UserError(
                "the conversion ran out of memory: stop other jobs or run on a machine with more memory"
            ) from None
        raise


def exported_tflite(work_dir: Path) -> Path:
    """The TFLite model that went into the bundle (the quantized one when there is one)."""
    quantized = work_dir / "model_quantized.tflite"
    return quantized if quantized.exists() else work_dir / "model.tflite"


# --------------------------------------------------------------------------- running the bundle


@dataclass(frozen=True)
class RuntimeRun:
    """What the LiteRT-LM runtime produced for the verify prompts."""

    texts: list[str]
    load_seconds: float  # engine creation (reads the bundle, builds the XNNPACK weight cache)
    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0


def runtime_prompt(prompt: str) -> str:
    """The prompt as the runtime takes it: without the leading <bos>, which the runtime adds itself
    (the bundle's start token); passing it too would give the model two."""
    return prompt[len(fg.BOS):] if prompt.startswith(fg.BOS) else prompt


def run_bundle(bundle: Path, prompts: list[str], *, max_new_tokens: int, progress: bool = True) -> RuntimeRun:
    """Greedy answers of the LiteRT-LM runtime (CPU) to each prompt, one fresh session per prompt."""
    import litert_lm
    from tqdm import tqdm

    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    texts: list[str] = []
    prefill_tokens = decode_tokens = 0
    prefill_seconds = decode_seconds = 0.0
    # The runtime writes an XNNPACK weight cache as large as the model: keep it out of the DVC output.
    with tempfile.TemporaryDirectory(prefix="litertlm-cache-") as cache_dir:
        started = time.perf_counter()
        engine = litert_lm.Engine(str(bundle), backend=litert_lm.Backend.CPU(), cache_dir=cache_dir,
                                  enable_benchmark=True)
        load_seconds = time.perf_counter() - started
        try:
            for prompt in tqdm(prompts, unit="prompt", desc="litert-lm", disable=not progress, dynamic_ncols=True):
                session = engine.create_session(
                    apply_prompt_template=False,  # the prompts are already rendered FunctionGemma turns
                    sampler_config=litert_lm.SamplerConfig(top_k=1),  # top-1: greedy, like the PyTorch side
                    max_output_tokens=max_new_tokens,
                )
                try:
                    session.run_prefill([runtime_prompt(prompt)])
                    texts.append(session.run_decode().texts[0])
                    info = session.get_benchmark_info()
                finally:
                    session.close()
                prefill_tokens += info.last_prefill_token_count
                decode_tokens += info.last_decode_token_count
                if info.last_prefill_tokens_per_second > 0:
                    prefill_seconds += info.last_prefill_token_count / info.last_prefill_tokens_per_second
                if info.last_decode_tokens_per_second > 0:
                    decode_seconds += info.last_decode_token_count / info.last_decode_tokens_per_second
        finally:
            engine.close()
    return RuntimeRun(texts, load_seconds, prefill_tokens, prefill_seconds, decode_tokens, decode_seconds)


def run_pytorch(model_dir: Path, prompts: list[str], *, max_new_tokens: int) -> tuple[list[str], Any]:
    """Greedy answers of the PyTorch model (float32 on the CPU, the exact reference), and its tokenizer.

    One prompt per batch: no padding, so nothing but the model itself shapes the answer.
    """
    from pipeline.generate import generate_texts, load_model

    model, tokenizer = load_model(model_dir, device="cpu")
    texts = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=1)
    return texts, tokenizer


# --------------------------------------------------------------------------- comparison (pure)


def strip_stop(text: str) -> str:
    """The text without the stop token that ended it (one side may include it, the other not)."""
    for token in fg.STOP_TOKENS:
        if text.endswith(token):
            return text[: -len(token)]
    return text


def same_answer(a: str, b: str) -> bool:
    """Both texts give the same parsed answer: the same calls, the same text, equally well-formed."""
    pa, pb = fg.parse_output(a), fg.parse_output(b)
    return pa.calls == pb.calls and pa.text == pb.text and pa.malformed == pb.malformed


def prefix_fraction(reference: list[int], other: list[int]) -> float:
    """Share of the longer token sequence that both have in common from the start (1.0 if identical)."""
    longest = max(len(reference), len(other))
    if longest == 0:
        return 1.0
    common = 0
    for x, y in zip(reference, other):
        if x != y:
            break
        common += 1
    return common / longest


def compare_answers(targets: list[list[dict]], pytorch: list[str], runtime: list[str],
                    pytorch_ids: list[list[int]], runtime_ids: list[list[int]]) -> dict[str, float]:
    """Flat agreement and accuracy figures of the runtime against PyTorch on the same prompts.

    `*_ids` are the token ids of each text without its stop token (both re-tokenized the same way).
    """
    from pipeline.scoring import score_row

    n = len(targets)
    if not n or not (len(pytorch) == len(runtime) == len(pytorch_ids) == len(runtime_ids) == n):
        raise ValueError("compare_answers needs one PyTorch and one runtime answer per target, and at least one")
    calls = [fg.parse_output(p).calls == fg.parse_output(r).calls for p, r in zip(pytorch, runtime)]
    return {
        "agreement": sum(same_answer(p, r) for p, r in zip(pytorch, runtime)) / n,
        "call_agreement": sum(calls) / n,
        "text_agreement": sum(strip_stop(p) == strip_stop(r) for p, r in zip(pytorch, runtime)) / n,
        "token_prefix_agreement": sum(prefix_fraction(a, b) for a, b in zip(pytorch_ids, runtime_ids)) / n,
        "exact_match_pytorch": sum(score_row(t, p).exact for t, p in zip(targets, pytorch)) / n,
        "exact_match_litertlm": sum(score_row(t, r).exact for t, r in zip(targets, runtime)) / n,
    }


def agreement_failure(agreement: float, min_agreement: float, verified: int) -> str | None:
    """The stage's verdict: None when the bundle passes, else the sentence that fails it."""
    if agreement >= min_agreement:
        return None
    agreeing = round(agreement * verified)
    return (
        f"the converted model gives the same answer as PyTorch on only {agreeing} of {verified} verify prompts "
        f"({agreement:.0%} < convert.min_agreement {min_agreement:.0%}), so the bundle was deleted: "
        "set convert.quantize: none to tell quantization loss from a broken export, and see metrics/convert.json"
    )


# --------------------------------------------------------------------------- main


def replace_outputs(out_dir: Path, name: str) -> None:
    """Remove what an earlier run of this stage left in out_dir (DVC does this too; a direct run needs it)."""
    for path in (out_dir / f"{name}.litertlm", out_dir / f"{name}.tflite"):
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "intermediate", ignore_errors=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_bundle(model_dir: Path, out_dir: Path, params: ConvertParams) -> tuple[Path, float, float]:
    """Convert into a temporary folder, then move the bundle (and the optional extras) into out_dir.

    Returns (bundle path, conversion seconds, peak memory of the process so far in MB).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    replace_outputs(out_dir, params.output_name)
    bundle = out_dir / f"{params.output_name}.litertlm"
    with tempfile.TemporaryDirectory(prefix="convert-litertlm-") as tmp:
        work_dir = Path(tmp)
        started = time.perf_counter()
        shutil.move(convert(model_dir, work_dir, params), bundle)
        seconds = time.perf_counter() - started
        peak_mb = peak_rss_mb()
        if params.export_tflite:
            shutil.copy(exported_tflite(work_dir), out_dir / f"{params.output_name}.tflite")
        if params.keep_intermediate:
            shutil.copytree(work_dir, out_dir / "intermediate")
    meta = describe_metadata(read_llm_metadata(bundle))
    if meta["model_type"] != RUNTIME_MODEL_TYPE or meta["stop_tokens"] != list(fg.STOP_TOKENS):
        raise RuntimeError(f"{bundle} carries unexpected runtime metadata: {meta}")
    return bundle, seconds, peak_mb


@dataclass(frozen=True)
class Verification:
    """The verify prompts answered by PyTorch and by the bundle, and how the answers compare."""

    pytorch: list[str]
    pytorch_seconds: float
    runtime: RuntimeRun
    comparison: dict[str, float]


def verify(bundle: Path, model_dir: Path, rows: list[dict], params: ConvertParams) -> Verification:
    prompts = [row["prompt"] for row in rows]
    log.info("verifying on %d eval prompts (greedy, up to %d new tokens each)", len(prompts), params.verify_max_new_tokens)
    started = time.perf_counter()
    pytorch, tokenizer = run_pytorch(model_dir, prompts, max_new_tokens=params.verify_max_new_tokens)
    pytorch_seconds = time.perf_counter() - started
    runtime = run_bundle(bundle, prompts, max_new_tokens=params.verify_max_new_tokens)

    def ids(texts: list[str]) -> list[list[int]]:  # both sides re-tokenized the same way
        return [tokenizer(strip_stop(t), add_special_tokens=False)["input_ids"] for t in texts]

    comparison = compare_answers([row["target_calls"] for row in rows], pytorch, runtime.texts,
                                 ids(pytorch), ids(runtime.texts))
    differing = [i for i, (p, r) in enumerate(zip(pytorch, runtime.texts)) if not same_answer(p, r)]
    for i in differing[:SHOW_DIFFERENCES]:
        log.warning("verify prompt %d (eval line %s) differs:\n  pytorch: %r\n  litert:  %r", i,
                    rows[i].get("line", "?"), pytorch[i][:300], runtime.texts[i][:300])
    if len(differing) > SHOW_DIFFERENCES:
        log.warning("... and %d more verify prompts differ", len(differing) - SHOW_DIFFERENCES)
    log.info("agreement with PyTorch %.0f%% (calls %.0f%%, text %.0f%%, token prefix %.0f%%); exact match "
             "PyTorch %.0f%%, LiteRT-LM %.0f%%; runtime prefill %.0f tok/s, decode %.1f tok/s",
             *(100 * comparison[k] for k in ("agreement", "call_agreement", "text_agreement",
                                              "token_prefix_agreement", "exact_match_pytorch", "exact_match_litertlm")),
             runtime.prefill_tokens_per_s, runtime.decode_tokens_per_s)
    return Verification(pytorch, pytorch_seconds, runtime, comparison)


def build_metrics(params: ConvertParams, bundle: Path, convert_seconds: float, peak_mb: float,
                  num_parameters: int, checked: Verification) -> dict[str, Any]:
    """metrics/convert.json: flat keys, what made the run under run_*."""
    size = bundle.stat().st_size
    runtime = checked.runtime
    metrics: dict[str, Any] = {
        "quantize": params.quantize,
        "file_size_bytes": size,
        "file_size_mb": round(size / 1e6, 1),
        "convert_seconds": round(convert_seconds, 1),
        "convert_peak_memory_mb": round(peak_mb),
        "parameters": num_parameters,
        "verify_examples": len(checked.pytorch),
        **{key: round(value, 4) for key, value in checked.comparison.items()},
        "pytorch_verify_seconds": round(checked.pytorch_seconds, 1),
        "runtime_load_seconds": round(runtime.load_seconds, 2),
        "runtime_prefill_tokens_per_s": round(runtime.prefill_tokens_per_s, 1),
        "runtime_decode_tokens_per_s": round(runtime.decode_tokens_per_s, 1),
        "runtime_prefill_tokens": runtime.prefill_tokens,
        "runtime_decode_tokens": runtime.decode_tokens,
    }
    versions = package_versions("litert-torch", "litert-lm-api", "litert-lm-builder", "ai-edge-quantizer")
    metrics.update({f"run_version_{k.replace('-', '_')}": v for k, v in versions.items()})
    metrics.update({f"run_{k}": v for k, v in run_record().items()})
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a fine-tuned FunctionGemma to .litertlm and verify it.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/finetuned"), help="Hugging Face model folder")
    parser.add_argument("--eval-data", type=Path, default=Path("data/formatted/eval.jsonl"))
    parser.add_argument("--out-dir", type=Path, default=Path("models/litertlm"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/convert.json"))
    args = parser.parse_args(argv)

    # Everything a user can get wrong is checked before the minutes of conversion.
    params: ConvertParams = load_params("convert", path=args.params)
    read_model_config(args.model)
    rows = read_eval_rows(args.eval_data, params.verify_examples)
    check_prompt_lengths(args.model, rows, params)
    num_parameters = count_parameters(args.model)
    needed = conversion_memory_bytes(num_parameters)
    log.info("%s: %.0fM parameters, quantize %s, prefill %s, KV cache %d tokens; needs about %.1f GB of memory",
             args.model, num_parameters / 1e6, params.quantize, params.prefill_seq_lens, params.kv_cache_max_len,
             needed / 1e9)
    check_memory(needed, available_memory_bytes())

    bundle, convert_seconds, peak_mb = write_bundle(args.model, args.out_dir, params)
    log.info("wrote %s (%.1f MB) in %.0f s, peak memory %.1f GB", bundle, bundle.stat().st_size / 1e6,
             convert_seconds, peak_mb / 1e3)
    checked = verify(bundle, args.model, rows, params)
    write_json(args.metrics, build_metrics(params, bundle, convert_seconds, peak_mb, num_parameters, checked))

    failure = agreement_failure(checked.comparison["agreement"], params.min_agreement, len(rows))
    if failure:
        bundle.unlink()
        (args.out_dir / f"{params.output_name}.tflite").unlink(missing_ok=True)
        raise UserError(failure)


if __name__ == "__main__":
    run_main(main)
