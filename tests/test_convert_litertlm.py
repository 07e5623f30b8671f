"""convert_litertlm: metadata, comparison and error paths (fast), a real conversion of the tiny
Gemma 3 run through the LiteRT-LM runtime (about 30 s, once per session), and the real 270M (slow).

The tiny model has random weights, so its greedy answers are junk, but deterministic junk: with
`quantize: none` the runtime must reproduce PyTorch's text exactly, and a bundle of a different
model must fail verification.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import typing
from pathlib import Path

import pytest

from stages import convert_litertlm as cv
from pipeline import functiongemma as fg
from pipeline.common import UserError, read_json
from pipeline.params import ConvertParams, read_yaml

ROOT = Path(__file__).resolve().parents[1]
CALL = "<start_function_call>call:show_map{query:<escape>Paris<escape>}<end_function_call><start_function_response>"
OTHER_CALL = "<start_function_call>call:show_map{query:<escape>Rome<escape>}<end_function_call><start_function_response>"


def write_params(tmp_path: Path, **convert: object) -> Path:
    """params.yaml with the convert section changed (the rest as committed)."""
    from ruamel.yaml import YAML

    raw = read_yaml(ROOT / "params.yaml")
    raw["convert"].update(convert)
    path = tmp_path / "params.yaml"
    with open(path, "w", encoding="utf-8") as f:
        YAML(typ="safe", pure=True).dump(raw, f)
    return path


# --------------------------------------------------------------------------- pure parts


def test_every_quantize_choice_maps_to_a_recipe_the_quantizer_knows():
    import ai_edge_quantizer.recipe as recipes

    choices = set(typing.get_args(typing.get_type_hints(ConvertParams)["quantize"]))
    assert choices == set(cv.QUANT_RECIPES)
    for name, recipe in cv.QUANT_RECIPES.items():
        assert recipe == "none" if name == "none" else callable(getattr(recipes, recipe, None)), name


def test_llm_metadata_is_functiongemmas():
    meta = cv.describe_metadata(cv.build_llm_metadata(1024))
    assert meta == {
        "start_token": "<bos>",
        "stop_tokens": ["<start_function_response>", "<end_of_turn>", "<eos>"],
        "model_type": "function_gemma",
        "max_num_tokens": 1024,
    }


def test_runtime_prompt_drops_the_bos_the_runtime_adds_itself():
    prompt = "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert cv.runtime_prompt(prompt) == prompt[len("<bos>"):]
    assert cv.runtime_prompt("no bos") == "no bos"


def test_strip_stop_removes_one_trailing_stop_token_only():
    assert cv.strip_stop(CALL).endswith("<end_function_call>")
    assert cv.strip_stop("hello<end_of_turn>") == "hello"
    assert cv.strip_stop("<eos>hello") == "<eos>hello"


def test_same_answer_compares_calls_and_text():
    assert cv.same_answer(CALL, CALL.removesuffix("<start_function_response>"))  # the stop token is no answer
    assert not cv.same_answer(CALL, OTHER_CALL)
    assert cv.same_answer("Sure.<end_of_turn>", "Sure.")
    assert not cv.same_answer("Sure.<end_of_turn>", "No.<end_of_turn>")
    assert not cv.same_answer(CALL, "<start_function_call>call:show_map{query:<escape>Par")  # truncated


def test_prefix_fraction():
    assert cv.prefix_fraction([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert cv.prefix_fraction([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert cv.prefix_fraction([1, 2], [1, 2, 3, 4]) == 0.5  # running on past PyTorch's stop counts against
    assert cv.prefix_fraction([], []) == 1.0
    assert cv.prefix_fraction([5], [6]) == 0.0


def test_compare_answers_figures():
    targets = [[{"name": "show_map", "arguments": {"query": "Paris"}}]] * 4
    pytorch = [CALL, CALL, "junk<end_of_turn>", CALL]
    runtime = [CALL, OTHER_CALL, "junk", CALL.removesuffix("<start_function_response>")]
    ids = [[1, 2, 3], [1, 2, 3], [7], [1, 2, 3]]
    runtime_ids = [[1, 2, 3], [1, 2, 4], [7], [1, 2, 3]]
    got = cv.compare_answers(targets, pytorch, runtime, ids, runtime_ids)
    assert got == {
        "agreement": 0.75,
        "call_agreement": 0.75,
        "text_agreement": 0.75,
        "token_prefix_agreement": pytest.approx((1 + 2 / 3 + 1 + 1) / 4),
        "exact_match_pytorch": 0.75,
        "exact_match_litertlm": 0.5,
    }
    with pytest.raises(ValueError):
        cv.compare_answers([], [], [], [], [])


def test_agreement_failure_is_one_sentence_below_the_threshold():
    assert cv.agreement_failure(0.9, 0.9, 20) is None
    message = cv.agreement_failure(0.6, 0.9, 20)
    assert "12 of 20" in message and "60%" in message and "convert.min_agreement 90%" in message
    assert message.count(". ") == 0 and "\n" not in message


def test_memory_estimate_covers_what_was_measured():
    assert cv.conversion_memory_bytes(268_098_176) > 6.1e9  # the 270M peaked at 6.1 GB here
    assert cv.conversion_memory_bytes(16_800_000) > 1.4e9  # the tiny model at 1.4 GB
    cv.check_memory(int(6e9), None)  # no /proc/meminfo: no check
    cv.check_memory(int(6e9), int(7e9))
    with pytest.raises(UserError, match=r"^not enough memory to convert: the export needs about 6.0 GB but only 2.0 GB"):
        cv.check_memory(int(6e9), int(2e9))


def test_tflite_schema_alias_is_scoped():
    if "tensorflow" in sys.modules:
        pytest.skip("a real TensorFlow is loaded")
    import ai_edge_litert.schema_py_generated as litert_schema

    with cv.tflite_schema_alias():
        from tensorflow.lite.python import schema_py_generated

        assert schema_py_generated is litert_schema
    assert not any(name == "tensorflow" or name.startswith("tensorflow.") for name in sys.modules)


# --------------------------------------------------------------------------- errors users can cause


def test_no_finetuned_model_is_one_clear_sentence(tmp_path):
    with pytest.raises(UserError, match=r"no fine-tuned model in .*: run `dvc repro train` first"):
        cv.main(["--params", str(ROOT / "params.yaml"), "--model", str(tmp_path / "missing"),
                 "--eval-data", str(tmp_path / "eval.jsonl"), "--out-dir", str(tmp_path / "out"),
                 "--metrics", str(tmp_path / "convert.json")])


def test_an_architecture_the_converter_cannot_build_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UserError, match=r"holds a 'llama' model \(LlamaForCausalLM\), which this stage cannot convert"):
        cv.read_model_config(tmp_path)


def test_not_enough_memory_stops_before_converting(tiny_base, formatted_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(cv, "available_memory_bytes", lambda: int(0.5e9))
    monkeypatch.setattr(cv, "convert", lambda *a: pytest.fail("must not start the conversion"))
    with pytest.raises(UserError, match="not enough memory to convert"):
        cv.main(["--params", str(ROOT / "params.yaml"), "--model", str(tiny_base),
                 "--eval-data", str(formatted_sample / "eval.jsonl"), "--out-dir", str(tmp_path / "out"),
                 "--metrics", str(tmp_path / "convert.json")])
    assert not (tmp_path / "out").exists()


def test_a_prompt_too_long_for_the_kv_cache_is_refused_before_converting(tiny_base, formatted_sample, tmp_path):
    params = write_params(tmp_path, kv_cache_max_len=512, verify_max_new_tokens=128)
    with pytest.raises(UserError, match=r"-token prompt, which with convert.verify_max_new_tokens 128 does not fit "
                                        r"convert.kv_cache_max_len 512: raise kv_cache_max_len"):
        cv.main(["--params", str(params), "--model", str(tiny_base),
                 "--eval-data", str(formatted_sample / "eval.jsonl"), "--out-dir", str(tmp_path / "out"),
                 "--metrics", str(tmp_path / "convert.json")])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the tiny model, converted for real

TINY_VERIFY = 3


@pytest.fixture(scope="session")
def tiny_converted(tiny_base, formatted_sample, tmp_path_factory):
    """The stage run on the tiny model: float32 (so the runtime must match PyTorch exactly), with both extras."""
    import time

    tmp = tmp_path_factory.mktemp("convert")
    params = write_params(tmp, quantize="none", verify_examples=TINY_VERIFY, verify_max_new_tokens=24,
                          export_tflite=True, keep_intermediate=True, min_agreement=1.0)
    out_dir, metrics = tmp / "litertlm", tmp / "metrics" / "convert.json"
    started = time.perf_counter()
    cv.main(["--params", str(params), "--model", str(tiny_base), "--eval-data", str(formatted_sample / "eval.jsonl"),
             "--out-dir", str(out_dir), "--metrics", str(metrics)])
    print(f"tiny conversion + verification: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out_dir, read_json(metrics)


def test_tiny_outputs_are_the_bundle_and_the_asked_for_extras(tiny_converted):
    out_dir, _ = tiny_converted
    name = read_yaml(ROOT / "params.yaml")["convert"]["output_name"]
    # no runtime cache, no temporary folder
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{name}.litertlm", f"{name}.tflite", "intermediate"]
    kept = {p.name for p in (out_dir / "intermediate").iterdir()}
    assert {"model.tflite", "llm_metadata.pb", "tokenizer.json"} <= kept and "model.litertlm" not in kept
    assert (out_dir / f"{name}.tflite").read_bytes()[4:8] == b"TFL3"  # a TFLite flatbuffer


def test_tiny_bundle_metadata_read_back(tiny_converted):
    out_dir, _ = tiny_converted
    meta = cv.describe_metadata(cv.read_llm_metadata(next(out_dir.glob("*.litertlm"))))
    assert meta["start_token"] == "<bos>"
    assert {"<end_of_turn>", "<start_function_response>"} <= set(meta["stop_tokens"])
    assert meta["model_type"] == "function_gemma"
    assert meta["max_num_tokens"] == read_yaml(ROOT / "params.yaml")["convert"]["kv_cache_max_len"]


def test_tiny_bundle_loads_in_the_runtime_with_functiongemma_tokens(tiny_converted, tmp_path):
    import litert_lm

    out_dir, _ = tiny_converted
    engine = litert_lm.Engine(str(next(out_dir.glob("*.litertlm"))), backend=litert_lm.Backend.CPU(),
                              cache_dir=str(tmp_path))
    try:
        assert engine.bos_token_id == 2
        assert sorted(engine.eos_token_ids) == [[1], [50], [106]]
        # the bundle carries the fine-tuned model's tokenizer: ids 46-52 are the function tokens
        assert engine.tokenize(fg.START_CALL + fg.ESCAPE) == [48, 52]
        assert engine.detokenize([48, 49, 50]) == fg.START_CALL + fg.END_CALL + fg.START_RESPONSE
    finally:
        engine.close()
    assert not any(out_dir.glob("*cache*"))


def test_tiny_float32_bundle_matches_pytorch_exactly(tiny_converted):
    _, metrics = tiny_converted
    assert metrics["quantize"] == "none"
    assert metrics["verify_examples"] == TINY_VERIFY
    assert metrics["agreement"] == metrics["text_agreement"] == metrics["token_prefix_agreement"] == 1.0
    assert metrics["exact_match_pytorch"] == metrics["exact_match_litertlm"] == 0.0  # random weights
    assert metrics["runtime_decode_tokens"] == TINY_VERIFY * 24  # junk never hits a stop token
    assert metrics["runtime_prefill_tokens_per_s"] > 0 and metrics["runtime_decode_tokens_per_s"] > 0
    assert metrics["file_size_bytes"] > 16_000_000 * 4  # float32 weights of a 17M-parameter model
    assert metrics["run_version_litert_torch"] == "0.10.0"


def test_a_broken_export_fails_the_stage(tiny_converted, tiny_base, formatted_sample, tmp_path, monkeypatch):
    """The tiny bundle, verified against a model whose last MLP differs (as a silent weight mismatch
    would leave it), must fail verification, and the bundle must not stay behind."""
    from safetensors.torch import load_file, save_file

    out_dir, _ = tiny_converted
    other = tmp_path / "other"
    shutil.copytree(tiny_base, other)
    weights = load_file(str(other / "model.safetensors"))
    weights["model.layers.1.mlp.down_proj.weight"].zero_()
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})

    def fake_convert(model_dir, work_dir, params):
        return Path(shutil.copy(next(out_dir.glob("*.litertlm")), work_dir / "model.litertlm"))

    monkeypatch.setattr(cv, "convert", fake_convert)
    params = write_params(tmp_path, verify_examples=TINY_VERIFY, verify_max_new_tokens=8, min_agreement=0.5)
    with pytest.raises(UserError, match=r"same answer as PyTorch on only [01] of 3 verify prompts .* bundle was deleted"):
        cv.main(["--params", str(params), "--model", str(other), "--eval-data", str(formatted_sample / "eval.jsonl"),
                 "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "convert.json")])
    assert list((tmp_path / "out").iterdir()) == []
    metrics = read_json(tmp_path / "convert.json")  # the numbers are still there to read
    assert metrics["agreement"] < 0.5 and metrics["token_prefix_agreement"] < 0.5


# --------------------------------------------------------------------------- slow: the real 270M


@pytest.fixture(scope="module")
def gguf_base(tmp_path_factory):
    """models/base/ as `model.source: gguf` writes it: the real Gemma 3 270M (stands in for a fine-tuned one)."""
    import os

    from stages.fetch import fetch_model
    from pipeline.params import load_params

    model = load_params("model", path=ROOT / "params.yaml")
    cache = os.environ.get("PIPELINE_TEST_CACHE")
    folder = Path(cache) / "base-gguf" if cache else tmp_path_factory.mktemp("base-gguf")
    if not (folder / "source.json").exists():
        fetch_model(dataclasses.replace(model, source="gguf", path=""), folder)
    return folder


@pytest.mark.slow
def test_real_270m_converts_and_runs(gguf_base, formatted_sample, tmp_path):
    params = write_params(tmp_path, quantize="dynamic_int8", verify_examples=5, verify_max_new_tokens=32,
                          min_agreement=0.0)
    out_dir, metrics_path = tmp_path / "litertlm", tmp_path / "convert.json"
    cv.main(["--params", str(params), "--model", str(gguf_base), "--eval-data", str(formatted_sample / "eval.jsonl"),
             "--out-dir", str(out_dir), "--metrics", str(metrics_path)])
    metrics = read_json(metrics_path)
    bundle = next(out_dir.glob("*.litertlm"))
    assert 250e6 < bundle.stat().st_size < 320e6  # int8 weights of 268M parameters (+ tokenizer)
    meta = cv.describe_metadata(cv.read_llm_metadata(bundle))
    assert meta["model_type"] == "function_gemma"
    assert {"<end_of_turn>", "<start_function_response>"} <= set(meta["stop_tokens"])
    # The base model makes no calls (it has never seen the format) and rambles to the token budget;
    # int8 drifts from float32 along the way, but the runtime must follow PyTorch for most of it.
    assert metrics["call_agreement"] == 1.0
    assert metrics["token_prefix_agreement"] >= 0.5
    assert metrics["runtime_prefill_tokens_per_s"] > 100 and metrics["runtime_decode_tokens_per_s"] > 10
