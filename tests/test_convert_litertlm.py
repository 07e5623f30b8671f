"""convert_litertlm: the judging and the gate (pure, fast), error paths, a real conversion of tiny Gemma 3
models run through the LiteRT-LM runtime both ways (once per session), and the real 270M (slow).

A random tiny model never makes a call, so a gate on calls could not tell a sound bundle from a broken
one with it. The fixture trains the tiny model (a few seconds) to answer every prompt with one call;
its eval-stage predictions are what the bundles are judged against: the float32 bundle of that model
must reproduce them on every row, both ways, and a bundle of the same model with shuffled weights
must fail the gate and be deleted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import typing
from pathlib import Path

import pytest

from pipeline import functiongemma as fg
from pipeline import scoring
from pipeline.common import UserError, read_json, write_jsonl
from pipeline.litertlm import AppAnswer, open_engine, rendered_prompt, runtime_prompt
from pipeline.params import ConvertParams, parse_section, read_yaml
from stages import convert_litertlm as cv
from tests.helpers import ROOT, set_params

CALL = "<start_function_call>call:show_map{query:<escape>Paris<escape>}<end_function_call><start_function_response>"
OTHER_CALL = "<start_function_call>call:show_map{query:<escape>Rome<escape>}<end_function_call><start_function_response>"
PARIS = [{"name": "show_map", "arguments": {"query": "Paris"}}]
LIGHT = {"name": "turn_on_flashlight", "arguments": {}}


def write_params(tmp_path: Path, **updates: object) -> Path:
    """params.yaml with some keys changed (dotted, e.g. convert.quantize), the rest as committed."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    set_params(path, updates)
    return path


def convert_params(**overrides) -> ConvertParams:
    return parse_section("convert", {**read_yaml(ROOT / "params.yaml")["convert"], **overrides})


def stage(params: Path, model: Path, data: Path, predictions: Path, out: Path) -> list[str]:
    return ["--params", str(params), "--model", str(model), "--eval-data", str(data), "--predictions", str(predictions),
            "--out-dir", str(out / "litertlm"), "--metrics", str(out / "convert.json"), "--record", str(out / "record.json")]


# --------------------------------------------------------------------------- pure parts


def test_every_quantize_choice_maps_to_a_recipe_the_quantizer_knows():
    import ai_edge_quantizer.recipe as recipes

    choices = set(typing.get_args(typing.get_type_hints(ConvertParams)["quantize"]))
    assert choices == set(cv.QUANT_RECIPES)
    for name, recipe in cv.QUANT_RECIPES.items():
        assert recipe == "none" if name == "none" else callable(getattr(recipes, recipe, None)), name


def test_llm_metadata_is_functiongemmas_with_our_template():
    meta = cv.describe_metadata(cv.build_llm_metadata(1024))
    assert meta == {
        "start_token": "<bos>",
        "stop_tokens": ["<start_function_response>", "<end_of_turn>", "<eos>"],
        "model_type": "function_gemma",
        "template_for_tool_format": True,
        "prompt_template_is_ours": True,
        "max_num_tokens": 1024,
    }


def test_runtime_prompt_drops_the_bos_the_runtime_adds_itself():
    prompt = "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert runtime_prompt(prompt) == prompt[len("<bos>"):]
    assert runtime_prompt("no bos") == "no bos"


def judged_rows() -> cv.Judgement:
    """Four rows: PyTorch right on 0, 1, 3; the raw bundle loses row 1; the app way fails to parse row 3."""
    rows = [{"target_calls": PARIS, "pytorch": t, "_line": i + 1, "user": f"request {i}"}
            for i, t in enumerate([CALL, CALL, "junk<end_of_turn>", CALL])]
    raw = [CALL, OTHER_CALL, "junk", CALL.removesuffix(fg.START_RESPONSE)]
    paris = [fg.Call("show_map", {"query": "Paris"})]
    app = [AppAnswer(paris, ""), AppAnswer(paris, ""), AppAnswer([], "junk"), AppAnswer([], "", "runtime error: parse")]
    return cv.judge(rows, raw, {"litertlm_app": app})


def test_judgement_metrics_pair_each_way_with_pytorch():
    metrics = cv.judgement_metrics(judged_rows())
    assert metrics["rows_checked"] == 4
    assert (metrics["exact_match_pytorch"], metrics["exact_match_litertlm_raw"], metrics["exact_match_litertlm_app"]) == (0.75, 0.5, 0.5)
    assert metrics["exact_match_pytorch_n"] == 4 and 0 < metrics["exact_match_pytorch_ci_low"] < 0.75 < metrics["exact_match_pytorch_ci_high"] < 1
    assert metrics["exact_match_change_litertlm_raw"] == -0.25
    assert (metrics["rows_fixed_litertlm_raw"], metrics["rows_broken_litertlm_raw"]) == (0, 1)
    assert metrics["exact_match_change_litertlm_raw_ci_low"] < -0.25 < metrics["exact_match_change_litertlm_raw_ci_high"]
    assert metrics["exact_match_change_litertlm_raw_p_value"] == 1.0  # one discordant row proves nothing
    assert metrics["call_agreement_litertlm_raw"] == 0.75  # row 1 calls another place
    assert metrics["call_agreement_litertlm_app"] == 0.75  # row 3 unreadable in the runtime, readable in PyTorch
    assert metrics["per_function"]["show_map"] == {"rows": 4, "pytorch": 0.75, "litertlm_raw": 0.5, "litertlm_app": 0.5}
    changed = cv.changed_verdicts(judged_rows())
    assert [(r["_line"], was) for r, was in changed["litertlm_raw"]] == [(2, True)]
    assert [(r["_line"], was) for r, was in changed["litertlm_app"]] == [(4, True)]


def test_gate_on_exact_match_drop_and_call_agreement():
    metrics = cv.judgement_metrics(judged_rows())
    failures = cv.gate_failures(metrics, convert_params(max_exact_match_drop=2.0, min_call_agreement=0.5))
    assert len(failures) == 2 and all("25.0 points below PyTorch's 75.0% on the same 4 rows" in f for f in failures)
    assert cv.gate_failures(metrics, convert_params(max_exact_match_drop=25.0, min_call_agreement=0.5)) == []
    failures = cv.gate_failures(metrics, convert_params(max_exact_match_drop=30.0, min_call_agreement=0.8))
    assert len(failures) == 2 and all("equal PyTorch's on only 75% of the rows" in f for f in failures)


def test_predictions_are_joined_with_the_eval_rows_by_id(tmp_path):
    examples = [{"id": f"r{i}", "prompt": f"<bos>p{i}", "target_calls": [], "_line": i + 1} for i in range(4)]
    predictions = tmp_path / "predictions.jsonl"
    write_jsonl(predictions, [{"id": f"r{i}", "model": m, "raw": f"{m}{i}"} for m in ("finetuned", "base") for i in (3, 1, 0)])
    answers = cv.read_predictions(predictions)
    assert [a["id"] for a in answers] == ["r3", "r1", "r0"]
    rows = cv.checked_rows(examples, answers, limit=0)
    assert [(r["prompt"], r["pytorch"]) for r in rows] == [("<bos>p3", "finetuned3"), ("<bos>p1", "finetuned1"), ("<bos>p0", "finetuned0")]
    assert [r["id"] for r in cv.checked_rows(examples, answers, limit=2)] == ["r3", "r1"]  # evenly spaced of 3
    with pytest.raises(UserError, match="not in the eval data: the two are from different runs"):
        cv.checked_rows(examples[:2], answers, limit=0)
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(UserError, match=r"not the eval stage's predictions file \(line 1: .*line 2: invalid JSON"):
        cv.read_predictions(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="dvc repro eval"):
        cv.read_predictions(tmp_path / "missing.jsonl")


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


# --------------------------------------------------------------------------- a tiny model that calls


@pytest.fixture(scope="session")
def caller(tiny_base, formatted_sample, tmp_path_factory) -> dict:
    """A tiny model trained to answer every prompt with one call, evaluated by the eval stage on 6 rows
    whose target is that call: {"model", "data", "predictions", "work"}."""
    from stages import eval as eval_stage
    from stages import train

    work = tmp_path_factory.mktemp("caller")
    from pipeline import mobile_actions

    completion = fg.render_call(fg.Call(LIGHT["name"], {})) + fg.START_RESPONSE
    tools = [t for t in mobile_actions.TOOLS if t["function"]["name"] == LIGHT["name"]]  # short prompts: fast steps
    rows = [json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()]
    rows = [{**r, "tools": tools, "prompt": fg.render_prompt(tools, r["messages"]), "completion": completion,
             "target_calls": [LIGHT], "function_names": [LIGHT["name"]]} for r in rows[:6] + rows[-2:]]
    data = work / "data"
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "eval.jsonl", rows[:6])
    params = write_params(work, **{"train.max_steps": 60, "train.lr": 3e-3, "train.lr_scheduler": "constant",
                                   "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1,
                                   "train.eval_steps": 1000, "train.save_strategy": "steps", "train.save_steps": 1000,
                                   "train.precision": "fp32", "eval.batch_size": 6, "eval.max_new_tokens": 16,
                                   "eval.compare_base": False, "convert.quantize": "none",
                                   "convert.export_tflite": True, "convert.keep_intermediate": True})
    out = work / "out"
    train.main(["--params", str(params), "--data-dir", str(data), "--base-model", str(tiny_base),
                "--out-dir", str(work / "model"), "--checkpoint-dir", str(out / "ck"), "--metrics", str(out / "train.json"),
                "--live-dir", str(out / "live"), "--record", str(out / "train_record.json")])
    eval_stage.main(["--params", str(params), "--data", str(data / "eval.jsonl"), "--base-model", str(tiny_base),
                     "--finetuned-model", str(work / "model"), "--metrics", str(out / "eval.json"),
                     "--per-function", str(out / "pf.json"), "--confusion", str(out / "cf.json"),
                     "--mismatches", str(out / "mm.jsonl"), "--predictions", str(out / "predictions.jsonl"),
                     "--record", str(out / "eval_record.json")])
    assert read_json(out / "eval.json")["exact_match_finetuned"] == 1.0, "the tiny model did not learn its call"
    return {"model": work / "model", "data": data / "eval.jsonl", "predictions": out / "predictions.jsonl",
            "params": params, "work": work}


@pytest.fixture(scope="session")
def caller_converted(caller, tmp_path_factory) -> tuple[Path, dict]:
    """The stage on the caller: float32 (so the runtime must match PyTorch exactly), with both extras."""
    out = tmp_path_factory.mktemp("converted")
    cv.main(stage(caller["params"], caller["model"], caller["data"], caller["predictions"], out))
    return out / "litertlm", read_json(out / "convert.json")


@pytest.mark.integration
def test_outputs_are_the_bundle_and_the_asked_for_extras(caller_converted):
    out_dir, _ = caller_converted
    name = read_yaml(ROOT / "params.yaml")["convert"]["output_name"]
    # no runtime cache, no temporary folder
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{name}.litertlm", f"{name}.tflite", "intermediate"]
    kept = {p.name for p in (out_dir / "intermediate").iterdir()}
    assert {"model.tflite", "llm_metadata.pb", "tokenizer.json"} <= kept and "model.litertlm" not in kept
    assert (out_dir / f"{name}.tflite").read_bytes()[4:8] == b"TFL3"  # a TFLite flatbuffer


@pytest.mark.integration
def test_bundle_metadata_read_back(caller_converted):
    out_dir, _ = caller_converted
    meta = cv.describe_metadata(cv.read_llm_metadata(next(out_dir.glob("*.litertlm"))))
    assert meta["start_token"] == "<bos>" and meta["model_type"] == "function_gemma"
    assert {"<end_of_turn>", "<start_function_response>"} <= set(meta["stop_tokens"])
    assert meta["template_for_tool_format"] and meta["prompt_template_is_ours"]
    assert meta["max_num_tokens"] == read_yaml(ROOT / "params.yaml")["convert"]["kv_cache_max_len"]


@pytest.mark.integration
def test_a_sound_bundle_passes_with_every_row_as_pytorch_answered_it(caller_converted):
    _, metrics = caller_converted
    assert metrics["rows_checked"] == 6 and metrics["exact_match_pytorch_n"] == 6
    for way in ("pytorch", "litertlm_raw", "litertlm_app"):
        assert metrics[f"exact_match_{way}"] == 1.0, way
    assert metrics["call_agreement_litertlm_raw"] == metrics["call_agreement_litertlm_app"] == 1.0
    assert metrics["exact_match_change_litertlm_app"] == 0.0 and metrics["exact_match_change_litertlm_app_p_value"] == 1.0
    assert metrics["app_prompt_identical"] == 1.0  # the runtime renders each app conversation as we render the prompt
    assert metrics["per_function"] == {"turn_on_flashlight": {"rows": 6, "pytorch": 1.0, "litertlm_raw": 1.0, "litertlm_app": 1.0}}
    for key in ("litertlm_raw_prefill_tokens_per_s", "litertlm_raw_decode_tokens_per_s", "litertlm_app_examples_per_s",
                "runtime_load_seconds", "runtime_peak_memory_mb", "convert_seconds", "file_size_mb"):
        assert metrics[key] > 0, key
    assert metrics["quantize"] == "none" and metrics["file_size_mb"] > 16 * 4  # float32 weights of 17M parameters


@pytest.mark.integration
def test_a_broken_export_fails_the_gate_and_is_deleted(caller, caller_converted, tmp_path):
    """The caller with its weights shuffled (what a silent tensor-name mismatch leaves), converted and
    judged against the caller's own predictions: the stage fails, the bundle is gone, the figures stay."""
    import torch
    from safetensors.torch import load_file, save_file

    shuffled = tmp_path / "shuffled"
    shutil.copytree(caller["model"], shuffled)
    weights = load_file(str(shuffled / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if tensor.dim() == 2 and "embed" not in name:
            weights[name] = tensor.flatten()[torch.randperm(tensor.numel(), generator=generator)].reshape(tensor.shape)
    save_file(weights, str(shuffled / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"lost accuracy, so the bundle was deleted: litertlm_raw: exact match 0\.0% "
                                        r"is 100\.0 points below PyTorch's 100\.0% on the same 6 rows"):
        cv.main(stage(caller["params"], shuffled, caller["data"], caller["predictions"], out))
    assert not list((out / "litertlm").glob("*.litertlm")) and not list((out / "litertlm").glob("*.tflite"))
    metrics = read_json(out / "convert.json")
    assert metrics["exact_match_litertlm_raw"] == metrics["exact_match_litertlm_app"] == 0.0
    assert metrics["call_agreement_litertlm_raw"] < 0.5 and metrics["rows_broken_litertlm_app"] == 6


@pytest.mark.integration
def test_the_runtime_renders_the_golden_rows_as_we_do(caller_converted, golden_rows):
    """What the phone runtime renders for an app's conversation is what the model was trained on: the golden
    rows as they are, with a `system` turn instead of `developer`, and with every key order reversed
    (the runtime's built-in template would keep the app's order; our template in the bundle sorts)."""
    out_dir, _ = caller_converted
    reverse = lambda value: json.loads(json.dumps(value), object_pairs_hook=lambda pairs: dict(reversed(pairs)))  # noqa: E731
    with open_engine(next(out_dir.glob("*.litertlm"))) as engine:
        for row in golden_rows:
            history = row["messages"][:-1]
            ours = runtime_prompt(fg.render_prompt(row["tools"], history))
            assert rendered_prompt(engine, row["tools"], history) == ours
            as_system = [dict(m, role="system") if m["role"] == "developer" else m for m in history]
            assert rendered_prompt(engine, row["tools"], as_system) == ours
            assert rendered_prompt(engine, reverse(row["tools"]), history) == ours


# --------------------------------------------------------------------------- errors users can cause


def test_no_finetuned_model_is_one_clear_sentence(tmp_path):
    with pytest.raises(UserError, match=r"no fine-tuned model in .*: run `dvc repro train` first"):
        cv.main(stage(ROOT / "params.yaml", tmp_path / "missing", tmp_path / "eval.jsonl", tmp_path / "p.jsonl", tmp_path))


def test_an_architecture_the_converter_cannot_build_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UserError, match=r"holds a 'llama' model \(LlamaForCausalLM\), which this stage cannot convert"):
        cv.read_model_config(tmp_path)


@pytest.mark.integration
def test_not_enough_memory_stops_before_converting(caller, tmp_path, monkeypatch):
    monkeypatch.setattr(cv, "available_memory_bytes", lambda: int(0.5e9))
    monkeypatch.setattr(cv, "convert", lambda *a: pytest.fail("must not start the conversion"))
    with pytest.raises(UserError, match="not enough memory to convert"):
        cv.main(stage(caller["params"], caller["model"], caller["data"], caller["predictions"], tmp_path))
    assert not (tmp_path / "litertlm").exists()


@pytest.mark.integration
def test_a_prompt_too_long_for_the_kv_cache_is_refused_before_converting(caller, tmp_path):
    params = write_params(tmp_path, **{"convert.kv_cache_max_len": 128, "convert.prefill_seq_lens": [64],
                                       "eval.max_new_tokens": 64})  # the caller's prompts are ~100 tokens
    with pytest.raises(UserError, match=r"-token prompt, which with eval.max_new_tokens 64 does not fit "
                                        r"convert.kv_cache_max_len 128: raise kv_cache_max_len"):
        cv.main(stage(params, caller["model"], caller["data"], caller["predictions"], tmp_path))
    assert not (tmp_path / "litertlm").exists()


# --------------------------------------------------------------------------- slow: the real 270M


@pytest.fixture(scope="module")
def gguf_base(tmp_path_factory):
    """models/base/ as `model.source: gguf` writes it: the real Gemma 3 270M."""
    import os

    from pipeline.params import load_params
    from stages.fetch import fetch_model

    model = load_params("model", path=ROOT / "params.yaml")
    cache = os.environ.get("PIPELINE_TEST_CACHE")
    folder = Path(cache) / "base-gguf" if cache else tmp_path_factory.mktemp("base-gguf")
    if not (folder / "source.json").exists():
        fetch_model(dataclasses.replace(model, source="gguf", path=""), folder)
    return folder


@pytest.mark.slow
def test_real_270m_converts_and_the_runtime_renders_every_row_as_we_do(gguf_base, formatted_sample, tmp_path):
    """The real 270M (int8) on 5 sample rows, its PyTorch answers taken as written by hand: the bundle's
    size and metadata, the runtime's speed, and the runtime's own rendering of every app conversation."""
    rows = [json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()][:5]
    from pipeline.examples import example_id

    predictions = tmp_path / "predictions.jsonl"
    write_jsonl(predictions, [{"id": example_id(r), "model": "finetuned", "raw": r["completion"]} for r in rows])
    params = write_params(tmp_path, **{"convert.quantize": "dynamic_int8", "convert.max_exact_match_drop": 100.0,
                                       "convert.min_call_agreement": 0.0, "eval.max_new_tokens": 32})
    cv.main(stage(params, gguf_base, formatted_sample / "eval.jsonl", predictions, tmp_path))
    metrics = read_json(tmp_path / "convert.json")
    bundle = next((tmp_path / "litertlm").glob("*.litertlm"))
    assert 250e6 < bundle.stat().st_size < 320e6  # int8 weights of 268M parameters (+ tokenizer)
    assert metrics["app_prompt_identical"] == 1.0 and metrics["exact_match_pytorch"] == 1.0
    assert metrics["litertlm_raw_prefill_tokens_per_s"] > 100 and metrics["litertlm_raw_decode_tokens_per_s"] > 10
    assert scoring.NO_CALL not in metrics["per_function"]


def test_runtime_threads_default_to_the_cores_this_process_may_use():
    import os

    from pipeline.litertlm import runtime_threads

    assert runtime_threads(3) == 3
    assert runtime_threads(0) == len(os.sched_getaffinity(0))


def test_the_litert_import_noise_is_dropped_and_everything_else_reaches_stderr(capfd):
    """quiet_import: stdout prints and C++ logging on file descriptor 2 both come out on stderr, less the known
    import noise (the lines below are the ones litert-torch's import printed in the demo's log)."""
    import os

    noise = ["[ERROR] `mlp_only_layers` is part of Qwen3_5TextConfig.__init__'s signature, but not documented. Make sure to add it",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1796699923.101604   11279 port.cc:153] oneDNN custom operations are on. You may see slightly"]
    kept = ["E0000 00:00:1796699923.2   11279 model.cc:1] a real C++ error", "a line litert-torch prints"]
    with cv.quiet_import(cv.IMPORT_NOISE):
        os.write(2, (noise[1] + "\n" + noise[2] + "\n" + kept[0] + "\n").encode())
        print(noise[0])
        print(kept[1])
    out, err = capfd.readouterr()
    assert out == "" and err.splitlines() == kept
