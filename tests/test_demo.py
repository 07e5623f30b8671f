"""make demo: its recipe is valid params, its table reads the stages' real metric keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages import demo
from stages.common import UserError
from stages.params import SECTIONS, load_params
from tests.test_pipeline import set_params

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


def test_eval_stage_writes_the_keys_the_table_reads():
    source = (ROOT / "stages" / "eval.py").read_text() + (ROOT / "stages" / "scoring.py").read_text()
    for key in ("exact_match", "function_name_accuracy", "argument_f1"):
        assert f'"{key}"' in source
    assert '"agreement"' in (ROOT / "stages" / "convert_litertlm.py").read_text()


def test_demo_needs_a_dvc_git_repository(tmp_path):
    with pytest.raises(UserError, match="not a DVC project"):
        demo.check_repository(tmp_path)
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(UserError, match="at least one commit"):
        demo.check_repository(tmp_path)
