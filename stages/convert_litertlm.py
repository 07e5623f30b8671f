"""Convert the fine-tuned model into a `.litertlm` bundle for phones, and judge it on every eval row as apps run it.

    dvc repro convert_litertlm        (or: make convert)
    python -m stages.convert_litertlm --params params.yaml --model models/finetuned \
        --eval-data data/formatted/eval.jsonl --predictions data/eval/predictions.jsonl \
        --out-dir models/litertlm --metrics metrics/convert.json --record metrics/record/convert.json

Reads `models/finetuned/` (a Hugging Face Gemma 3 text folder: safetensors, tokenizer), the rows the
eval stage evaluated and the fine-tuned model's answers to them (`data/eval/predictions.jsonl`: the
PyTorch side is read, never generated again), joined with their tools and messages from
`data/formatted/eval.jsonl` (`convert.limit` > 0 checks that many of those rows, evenly spaced).
Writes `models/litertlm/<convert.output_name>.litertlm` (for the Google AI Edge Gallery app and the
LiteRT-LM runtime), optionally `<output_name>.tflite` and `intermediate/`, `metrics/convert.json`
and `metrics/record/convert.json` (what made the run; not a metric).

How it converts: litert-torch's `export_hf` exporter traces the model with the Hugging Face modeling
code itself (no re-authored copy of Gemma 3, so no hand-mapped tensor names that could silently
mismatch), writes one TFLite model with prefill signatures of `convert.prefill_seq_lens` tokens and a
decode signature over a KV cache of `convert.kv_cache_max_len`, quantizes the weights
(`convert.quantize`, see QUANT_RECIPES), and packs it with the model's own tokenizer and FunctionGemma's
runtime metadata (`llm_metadata`): start token `<bos>`, stop tokens `<start_function_response>`,
`<end_of_turn>`, `<eos>`, model type `function_gemma`, and pipeline/chat_template.jinja as the prompt
template, with `use_template_for_fc_format` so tools reach it as JSON. The runtime's built-in
FunctionGemma template renders an app's tools in the app's key order, adds a blank line after the
developer text and keeps `return` and empty entries; with our template in the bundle the phone renders
byte for byte the prompts the model was trained and evaluated on (tests/test_convert_litertlm.py).

How it judges: every checked row runs through the LiteRT-LM runtime (CPU, greedy) two ways, each scored
with the project's scorer against the row's target calls:
- raw prompt: our rendered prompt in a Session (measures the converted weights);
- as an app calls it: `create_conversation(messages=..., tools=...)` + `send_message(user turn)`, the
  runtime rendering the prompt and parsing the calls (what a phone user gets);
- optionally (`convert.constrained_decoding`) the app way with the runtime's constrained decoding.
The gate: the stage fails, deleting the bundle, when either way's exact match is more than
`convert.max_exact_match_drop` points below PyTorch's on the same rows, or when either way's calls
equal PyTorch's on fewer than `convert.min_call_agreement` of the rows (only a broken export falls that
low). The log names every row whose verdict changed. The runtime's XNNPACK weight cache (as large as
the model) goes to a temporary folder, never into `models/litertlm/`.

TensorFlow: litert-torch 0.10 imports `tensorflow.lite.python.schema_py_generated`
(the TFLite flatbuffer schema) at import time without declaring TensorFlow as a
dependency. Rather than install all of TensorFlow for one generated file, the
import is pointed at the copy of that schema that `ai-edge-litert` (a declared
dependency of litert-torch) ships; see `tflite_schema_alias`. An installed
TensorFlow is used as is.

Measured on this repo's 2-core CPU with the real Gemma 3 270M: conversion 65-100 s at about 6 GB peak
memory; the bundle is 285.6 MB with dynamic_int8 (1080 MB with none); bench/RESULTS.md has each
quantization recipe's size, speed and exact match.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import re
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
from pipeline import scoring
from pipeline.common import UserError, package_versions, read_jsonl, run_main, run_record, write_json
from pipeline.examples import read_examples, select_rows
from pipeline.litertlm import AppAnswer, open_engine, rendered_prompt, run_conversations, run_prompts, runtime_prompt
from pipeline.params import ConvertParams, load_params
from pipeline.stats import accuracy_figures, paired_difference

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

SHOW_CHANGED = 20  # rows whose verdict changed, named in the log (all of them are counted in the metrics)

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


def read_predictions(path: Path, model: str = "finetuned") -> list[dict]:
    """The eval stage's answers of one model, in its row order; bad lines named at once."""
    if not path.exists():
        raise UserError(f"{path} not found: run `dvc repro eval` first (the bundle is judged on the rows eval judged)")
    rows, bad = [], []
    for number, row, error in read_jsonl(path):
        if row is not None and not (isinstance(row.get("id"), str) and isinstance(row.get("raw"), str)
                                    and isinstance(row.get("model"), str)):
            error = "needs string 'id', 'model' and 'raw'"
        if error:
            bad.append(f"line {number}: {error}")
        elif row["model"] == model:
            rows.append(row)
    if bad:
        raise UserError(f"{path} is not the eval stage's predictions file ({'; '.join(bad[:3])}): re-run `dvc repro eval`")
    if not rows:
        raise UserError(f"{path} has no answers of the {model} model: re-run `dvc repro eval`")
    return rows


def checked_rows(examples: list[dict], predictions: list[dict], limit: int) -> list[dict]:
    """The eval rows the fine-tuned model answered (in that order, `limit` of them evenly spaced), each
    with its PyTorch answer under `pytorch` (the raw text the eval stage generated)."""
    by_id = {row["id"]: row for row in examples}
    missing = [p for p in predictions if p["id"] not in by_id]
    if missing:
        raise UserError(f"{len(missing)} of the eval stage's predictions (e.g. eval line {missing[0].get('eval_line')}) "
                        "are of rows that are not in the eval data: the two are from different runs; `dvc repro eval`")
    return select_rows([{**by_id[p["id"]], "pytorch": p["raw"]} for p in predictions], limit)


def check_prompt_lengths(model_dir: Path, rows: list[dict], params: ConvertParams, max_new_tokens: int) -> None:
    """Every checked prompt plus its answer budget must fit the KV cache (the runtime refuses more)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    room = params.kv_cache_max_len - max_new_tokens
    for row in rows:
        length = len(tokenizer.encode(row["prompt"], add_special_tokens=False).ids)
        if length > room:
            raise UserError(
                f"eval line {row.get('_line', '?')} has a {length}-token prompt, which with eval.max_new_tokens "
                f"{max_new_tokens} does not fit convert.kv_cache_max_len {params.kv_cache_max_len}: "
                "raise kv_cache_max_len (phones need the room too)"
            )


# --------------------------------------------------------------------------- metadata


def build_llm_metadata(kv_cache_max_len: int):
    """FunctionGemma's LiteRT-LM metadata (the proto the runtime and the Gallery app read), with our
    chat template as the prompt template and tools handed to it as JSON (see the module docstring)."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2, llm_model_type_pb2

    meta = llm_metadata_pb2.LlmMetadata()
    meta.start_token.token_str = fg.BOS  # the runtime prepends it to every prompt
    for token in fg.STOP_TOKENS:  # <start_function_response> ends calls, <end_of_turn> text answers
        meta.stop_tokens.add().token_str = token
    meta.prompt_templates.user.prefix = fg.START_OF_TURN + "user\n"
    meta.prompt_templates.user.suffix = fg.END_OF_TURN + "\n"
    meta.prompt_templates.model.prefix = fg.START_OF_TURN + "model\n"
    meta.prompt_templates.model.suffix = fg.END_OF_TURN + "\n"
    meta.llm_model_type.CopyFrom(llm_model_type_pb2.LlmModelType(
        function_gemma=llm_model_type_pb2.FunctionGemma(use_template_for_fc_format=True)))
    meta.jinja_prompt_template = fg.CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
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
        "template_for_tool_format": meta.llm_model_type.function_gemma.use_template_for_fc_format,
        "prompt_template_is_ours": meta.jinja_prompt_template == fg.CHAT_TEMPLATE_FILE.read_text(encoding="utf-8"),
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


# What importing litert-torch prints that is no news to a user: transformers' docstring check on model code
# litert-torch bundles ("[ERROR] `x` is part of Qwen3_5TextConfig.__init__'s signature, but not documented", a
# note to that code's authors, on stdout), and two lines of the C++ libraries' own logging on file descriptor 2
# (absl's notice that it logs to stderr before being set up, and oneDNN's "custom operations are on").
IMPORT_NOISE = re.compile(r"^\[ERROR\] `\w+` is part of \S+'s signature, but not documented"
                          r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                          r"|^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on")


@contextlib.contextmanager
def quiet_import(noise: re.Pattern) -> Iterator[None]:
    """Everything printed inside the block, on stdout or straight to file descriptor 2 (C++ logging), goes to
    stderr afterwards, less the lines `noise` matches."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    printed = io.StringIO()
    with tempfile.TemporaryFile() as logged:
        os.dup2(logged.fileno(), 2)
        try:
            with contextlib.redirect_stdout(printed):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logged.seek(0)
            lines = logged.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            lines += printed.getvalue().splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not noise.search(line)))
            sys.stderr.flush()


def export_bundle(model_dir: Path, work_dir: Path, params: ConvertParams) -> Path:
    """Run litert-torch's export_hf into `work_dir` (which keeps every file it writes); returns the bundle."""
    metadata_path = work_dir / "llm_metadata.pb"
    metadata_path.write_bytes(build_llm_metadata(params.kv_cache_max_len).SerializeToString())
    # litert-torch reports its progress (and its import its warnings) with print(): send them to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        with tflite_schema_alias(), quiet_import(IMPORT_NOISE):
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


# --------------------------------------------------------------------------- judging (pure)


@dataclass(frozen=True)
class Judgement:
    """Every checked row scored for PyTorch and each way of running the bundle."""

    rows: list[dict]
    scores: dict[str, list[scoring.RowScore]]  # "pytorch", "litertlm_raw", "litertlm_app" (+ "_constrained")


def app_score(target: list[dict], answer: AppAnswer) -> scoring.RowScore:
    """An app-way answer scored: the runtime's parsed calls; a turn it failed on is malformed."""
    return scoring.score_calls(target, answer.calls, malformed=bool(answer.error), error=answer.error)


def judge(rows: list[dict], raw_texts: list[str], app: dict[str, list[AppAnswer]]) -> Judgement:
    scores = {"pytorch": [scoring.score_row(r["target_calls"], r["pytorch"]) for r in rows],
              "litertlm_raw": [scoring.score_row(r["target_calls"], t) for r, t in zip(rows, raw_texts)]}
    for way, answers in app.items():
        scores[way] = [app_score(r["target_calls"], a) for r, a in zip(rows, answers)]
    return Judgement(rows, scores)


def same_calls(a: scoring.RowScore, b: scoring.RowScore) -> bool:
    """The two answers call the same functions with the same arguments (both readable, or both not)."""
    return a.predicted == b.predicted and a.malformed == b.malformed


def judgement_metrics(judged: Judgement) -> dict[str, Any]:
    """Exact match of PyTorch and of each bundle way (n, Wilson 95% interval), each way's paired change
    against PyTorch on the same rows (Newcombe 95% interval, exact McNemar p) and its call agreement."""
    reference = judged.scores["pytorch"]
    metrics: dict[str, Any] = {"rows_checked": len(judged.rows)}
    for way, scores in judged.scores.items():
        metrics.update(accuracy_figures(f"exact_match_{way}", [s.exact for s in scores]))
    for way, scores in judged.scores.items():
        if way == "pytorch":
            continue
        change = paired_difference([s.exact for s in reference], [s.exact for s in scores])
        metrics.update({f"exact_match_change_{way}": change.difference, f"exact_match_change_{way}_ci_low": change.ci_low,
                        f"exact_match_change_{way}_ci_high": change.ci_high, f"exact_match_change_{way}_p_value": change.p_value,
                        f"rows_fixed_{way}": change.fixed, f"rows_broken_{way}": change.broken,
                        f"call_agreement_{way}": sum(map(same_calls, reference, scores)) / len(scores) if scores else 0.0})
    table = scoring.per_function({way: scores for way, scores in judged.scores.items()})
    metrics["per_function"] = {r["function"]: {k.removeprefix("exact_match_"): v for k, v in r.items()
                                               if k.startswith("exact_match_") or k == "rows"} for r in table}
    return metrics


def gate_failures(metrics: dict[str, Any], params: ConvertParams) -> list[str]:
    """Why the bundle must not ship (empty: it may)."""
    failures = []
    for way in [k.removeprefix("call_agreement_") for k in metrics if k.startswith("call_agreement_")]:
        drop = 100 * (metrics["exact_match_pytorch"] - metrics[f"exact_match_{way}"])
        if drop > params.max_exact_match_drop:
            failures.append(f"{way}: exact match {metrics[f'exact_match_{way}']:.1%} is {drop:.1f} points below PyTorch's "
                            f"{metrics['exact_match_pytorch']:.1%} on the same {metrics['rows_checked']} rows "
                            f"(convert.max_exact_match_drop {params.max_exact_match_drop:g})")
        if metrics[f"call_agreement_{way}"] < params.min_call_agreement:
            failures.append(f"{way}: its calls equal PyTorch's on only {metrics[f'call_agreement_{way}']:.0%} of the rows "
                            f"(convert.min_call_agreement {params.min_call_agreement:.0%}), as only a broken export does")
    return failures


def changed_verdicts(judged: Judgement) -> dict[str, list[tuple[dict, bool]]]:
    """Per bundle way, the rows whose exact-match verdict differs from PyTorch's, with PyTorch's verdict."""
    reference = judged.scores["pytorch"]
    return {way: [(row, ref.exact) for row, ref, s in zip(judged.rows, reference, scores) if ref.exact != s.exact]
            for way, scores in judged.scores.items() if way != "pytorch"}


# --------------------------------------------------------------------------- main


def replace_outputs(out_dir: Path, name: str) -> None:
    """Remove what an earlier run of this stage left in out_dir (DVC does this too; a direct run needs it)."""
    for path in (out_dir / f"{name}.litertlm", out_dir / f"{name}.tflite"):
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "intermediate", ignore_errors=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start, or since `reset_peak_rss` (Linux: VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_rss() -> None:
    """Start measuring the peak anew (so the runtime's peak is not the conversion's); a no-op where unsupported."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


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


def run_bundle(bundle: Path, rows: list[dict], params: ConvertParams, max_new_tokens: int) -> tuple[Judgement, dict[str, Any]]:
    """Every checked row through the runtime, each way; (judgement, runtime figures for the metrics)."""
    reset_peak_rss()
    figures: dict[str, Any] = {}
    with open_engine(bundle, params.runtime_threads) as engine:
        log.info("runtime loaded the bundle in %.1f s; %d rows, raw prompt and as an app calls it, up to %d new tokens",
                 engine.load_seconds, len(rows), max_new_tokens)
        figures["runtime_load_seconds"] = round(engine.load_seconds, 2)
        raw, stats = run_prompts(engine, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens)
        figures.update(stats.figures("litertlm_raw"))
        ways = {"litertlm_app": False, **({"litertlm_app_constrained": True} if params.constrained_decoding else {})}
        app = {}
        for way, constrained in ways.items():
            app[way], stats = run_conversations(engine, rows, max_new_tokens=max_new_tokens, constrained=constrained)
            figures.update(stats.figures(way))
        # the runtime's own rendering of each app conversation against ours (a difference would be a skew)
        same = [rendered_prompt(engine, r["tools"], r["messages"]) == runtime_prompt(r["prompt"]) for r in rows]
        figures["app_prompt_identical"] = sum(same) / len(same)
        if not all(same):
            first = rows[same.index(False)]
            log.warning("the runtime renders %d of %d app conversations differently from our prompts (e.g. eval line %s)",
                        same.count(False), len(same), first.get("_line"))
    figures["runtime_peak_memory_mb"] = round(peak_rss_mb())
    return judge(rows, raw, app), figures


def log_changes(judged: Judgement) -> None:
    for way, changed in changed_verdicts(judged).items():
        if not changed:
            log.info("%s: no row changed verdict against PyTorch", way)
            continue
        log.warning("%s: %d rows changed verdict against PyTorch (%d fixed, %d broken)%s", way, len(changed),
                    sum(not was for _, was in changed), sum(was for _, was in changed),
                    "; first " + str(SHOW_CHANGED) if len(changed) > SHOW_CHANGED else "")
        for row, was in changed[:SHOW_CHANGED]:
            log.warning("  eval line %s (%s in PyTorch): %s", row.get("_line"), "right" if was else "wrong", row.get("user", "")[:100])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a fine-tuned FunctionGemma to .litertlm and judge it as apps run it.")
    parser.add_argument("--params", required=True, help="params.yaml (convert.* and eval.max_new_tokens are read)")
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    parser.add_argument("--eval-data", type=Path, required=True, help="formatted eval rows (eval.jsonl)")
    parser.add_argument("--predictions", type=Path, required=True, help="the eval stage's predictions.jsonl")
    for flag in ("--out-dir", "--metrics", "--record"):
        parser.add_argument(flag, type=Path, required=True, help="output (dvc.yaml declares it)")
    args = parser.parse_args(argv)

    # Everything a user can get wrong is checked before the minutes of conversion.
    params: ConvertParams = load_params("convert", path=args.params)
    max_new_tokens = load_params("eval", path=args.params).max_new_tokens  # the budget PyTorch's answers had
    read_model_config(args.model)
    rows = checked_rows(read_examples(args.eval_data), read_predictions(args.predictions), params.limit)
    check_prompt_lengths(args.model, rows, params, max_new_tokens)
    num_parameters = count_parameters(args.model)
    needed = conversion_memory_bytes(num_parameters)
    log.info("%s: %.0fM parameters, quantize %s, prefill %s, KV cache %d tokens; needs about %.1f GB of memory",
             args.model, num_parameters / 1e6, params.quantize, params.prefill_seq_lens, params.kv_cache_max_len,
             needed / 1e9)
    check_memory(needed, available_memory_bytes())

    bundle, convert_seconds, peak_mb = write_bundle(args.model, args.out_dir, params)
    size = bundle.stat().st_size
    log.info("wrote %s (%.1f MB) in %.0f s, peak memory %.1f GB", bundle, size / 1e6, convert_seconds, peak_mb / 1e3)
    judged, runtime = run_bundle(bundle, rows, params, max_new_tokens)
    metrics = {**judgement_metrics(judged), **runtime, "quantize": params.quantize, "file_size_mb": round(size / 1e6, 1),
               "convert_seconds": round(convert_seconds, 1), "convert_peak_memory_mb": round(peak_mb),
               "parameters": num_parameters}
    log_changes(judged)
    log.info("exact match on %d rows: PyTorch %.1f%%, bundle raw prompt %.1f%%, as an app calls it %.1f%%; "
             "runtime prefill %.0f tok/s, decode %.1f tok/s", metrics["rows_checked"],
             *(100 * metrics[f"exact_match_{w}"] for w in ("pytorch", "litertlm_raw", "litertlm_app")),
             runtime["litertlm_raw_prefill_tokens_per_s"], runtime["litertlm_raw_decode_tokens_per_s"])
    write_json(args.metrics, metrics)
    write_json(args.record, run_record(**{f"version_{k.replace('-', '_')}": v for k, v in package_versions(
        "litert-torch", "litert-lm-api", "litert-lm-builder", "ai-edge-quantizer").items()}))

    failures = gate_failures(metrics, params)
    if failures:
        bundle.unlink()
        (args.out_dir / f"{params.output_name}.tflite").unlink(missing_ok=True)
        raise UserError("the converted model lost accuracy, so the bundle was deleted: " + "; ".join(failures)
                        + ". Try convert.quantize: weight_only_int8 or none (bench/RESULTS.md compares them); "
                        "metrics/convert.json and the log name the rows that changed")


if __name__ == "__main__":
    run_main(main)
