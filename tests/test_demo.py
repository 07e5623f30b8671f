"""make demo: its recipe is valid params, its table reads the stages' real metric keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from commands import demo
from pipeline.common import UserError
from pipeline.params import SECTIONS, load_params
from tests.helpers import set_params

ROOT = Path(__file__).resolve().parents[1]


def test_demo_recipe_is_valid_params(tmp_path):
    """Every -S override the demo passes exists in params.yaml and validates."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    yaml = YAML(typ="safe")
    set_params(params, {key: yaml.load(value) for key, value in demo.DEMO_PARAMS.items()})
    data, model, train, evals = load_params("data", "model", "train", "eval", path=params)
    assert (data.source, model.source) == ("sample", "gguf")
    assert train.lora.enabled and train.max_steps == 90 and train.lr == 0.001
    assert evals.limit == 48
    load_params(*SECTIONS, path=params)


def test_summary_table_uses_the_eval_and_convert_keys(tmp_path):
    bundle = tmp_path / "m.litertlm"
    bundle.write_bytes(b"x" * 2_000_000)
    eval_metrics = {"exact_match_base": 0.0, "exact_match_finetuned": 0.646, "exact_match_delta": 0.646,
                    "function_name_accuracy_base": 0.0, "function_name_accuracy_finetuned": 0.854,
                    "function_name_accuracy_delta": 0.854, "argument_f1_base": 0.0,
                    "argument_f1_finetuned": 0.662, "argument_f1_delta": 0.662}
    table = demo.summary_table(eval_metrics, {"agreement": 0.95}, bundle,
                               {"fetch (cached)": 3.0, "train": 600.0, "eval": 240.0})
    assert "| exact match | 0.0% | 64.6% | 64.6% |" in table
    assert "| function-name accuracy | 0.0% | 85.4% | 85.4% |" in table
    assert "| argument F1 | 0.0% | 66.2% | 66.2% |" in table
    assert "(2.0 MB)" in table and "agreement: 95%" in table
    assert "| train | 10.0 min |" in table and "| fetch (cached) | 0.1 min |" in table
    assert "| total | 14.1 min |" in table


def test_table_reads_what_the_eval_stage_writes():
    """The table is fed the eval stage's own build_metrics output (not hand-written keys)."""
    from pipeline import functiongemma as fg
    from pipeline import scoring
    from pipeline.generate import Generation
    from stages import eval as eval_stage

    targets = [[{"name": "show_map", "arguments": {"query": "Paris"}}], [{"name": "turn_on_flashlight", "arguments": {}}]]
    right = [fg.render_call(fg.Call(**t[0])) + fg.START_RESPONSE for t in targets]

    def result(texts):
        generation = Generation(texts=texts, token_ids=[[1]] * 2, stopped=[True] * 2, prompt_tokens=[5] * 2, seconds=1.0)
        return eval_stage.ModelResult([0, 1], generation, [scoring.score_row(t, x) for t, x in zip(targets, texts)])

    metrics = eval_stage.build_metrics({"finetuned": result([right[0], "no<end_of_turn>"]), "base": result(["x", "y"])})
    table = demo.summary_table(metrics, {}, None, {"train": 60.0})
    assert "| exact match | 0.0% | 50.0% | 50.0% |" in table
    assert "| function-name accuracy | 0.0% | 50.0% | 50.0% |" in table


def test_demo_needs_a_dvc_git_repository(tmp_path):
    with pytest.raises(UserError, match="not a DVC project"):
        demo.check_repository(tmp_path)
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(UserError, match="at least one commit"):
        demo.check_repository(tmp_path)
