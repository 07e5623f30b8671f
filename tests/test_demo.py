"""make demo: its recipe is valid params, its progress estimate, and its table reads the stages' real metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from commands import demo
from commands.experiments import check_overrides, check_repository
from pipeline import functiongemma as fg
from pipeline import scoring
from pipeline.common import UserError
from pipeline.generate import Generation
from stages import convert_litertlm as cv
from stages import eval as eval_stage
from tests.helpers import ROOT


def test_demo_recipe_is_valid_params_and_judges_every_held_out_row():
    check_overrides(ROOT, demo.DEMO_PARAMS)  # every -S the demo passes exists and validates
    assert demo.DEMO_PARAMS["eval.limit"] == "0"  # the fine-tuned model and its bundle: all rows
    with pytest.raises(UserError, match="params.yaml has no train.speed"):
        check_overrides(ROOT, {**demo.DEMO_PARAMS, "train.speed": "1"})
    with pytest.raises(UserError, match="train.lr"):
        check_overrides(ROOT, {**demo.DEMO_PARAMS, "train.lr": "fast"})


def test_time_left_scales_the_measured_stage_times_by_this_machines_pace():
    expected = demo.EXPECTED_SECONDS
    assert demo.estimate_left({}, "fetch") == sum(expected.values())
    slow = {"fetch": 2 * expected["fetch"], "format": 2 * expected["format"]}  # twice as slow as measured
    assert demo.estimate_left(slow, "train") == pytest.approx(2 * (expected["train"] + expected["eval"] + expected["convert_litertlm"]))
    rest = expected["train"] + expected["eval"] + expected["convert_litertlm"]
    cached = {"fetch": 1.0, "format": 5 * expected["format"]}  # fetch restored by DVC, a slow few-second format
    assert demo.estimate_left(cached, "train") == pytest.approx(rest)  # neither says anything about the pace
    very_slow = {"fetch": 10 * expected["fetch"]}
    assert demo.estimate_left(very_slow, "train") == pytest.approx(3 * rest)  # the pace is bounded


def test_table_reads_what_the_eval_and_convert_stages_write(tmp_path):
    """The table is fed the stages' own metric builders, not hand-written keys."""
    targets = [[{"name": "show_map", "arguments": {"query": "Paris"}}], [{"name": "turn_on_flashlight", "arguments": {}}]] * 2
    right = [fg.render_call(fg.Call(**t[0])) + fg.START_RESPONSE for t in targets]

    def result(rows, texts):
        generation = Generation(texts=texts, token_ids=[[1]] * len(texts), stopped=[True] * len(texts),
                                prompt_tokens=[5] * len(texts), seconds=1.0)
        return eval_stage.ModelResult(rows, generation, [scoring.score_row(targets[i], x) for i, x in zip(rows, texts)])

    metrics = eval_stage.build_metrics({"finetuned": result([0, 1, 2, 3], [right[0], "no<end_of_turn>", right[2], right[3]]),
                                        "base": result([0, 2], ["x", "y"])})
    rows = [{"target_calls": t, "pytorch": r, "_line": i} for i, (t, r) in enumerate(zip(targets, right))]
    app = [cv.AppAnswer([fg.Call(**t[0])], "") for t in targets]
    converted = cv.judgement_metrics(cv.judge(rows, right[:3] + ["junk"], {"litertlm_app": app}))
    bundle = tmp_path / "m.litertlm"
    bundle.write_bytes(b"x" * 2_000_000)
    table = demo.summary_table(metrics, converted, bundle, {"fetch (cached)": 3.0, "train": 600.0}, demo.DEMO_PARAMS)
    assert "| base Gemma 3 270M (2 of the rows, up to 24 new tokens) | 0.0% (n = 2, 95% interval 0.0-65.8%) |" in table
    assert "| fine-tuned, PyTorch | 75.0% (n = 4, 95% interval 30.1-95.4%) |" in table
    assert "| .litertlm, raw prompt | 75.0% (n = 4," in table and "| .litertlm, as an app calls it | 100.0% (n = 4," in table
    assert "base -> fine-tuned on the 2 rows both answered: +100.0 points" in table
    assert "same 4 rows: +0.0 points (95% interval" in table
    assert "(2.0 MB)" in table and "| train | 10.0 min |" in table and "| total | 10.1 min |" in table


def test_demo_needs_a_dvc_git_repository(tmp_path):
    with pytest.raises(UserError, match="not a DVC project"):
        check_repository(tmp_path)
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(UserError, match="at least one commit"):
        check_repository(tmp_path)


def test_the_experiments_log_is_relayed_less_dvcs_notices_about_its_fresh_copy(monkeypatch, capsys):
    """`dvc exp run --temp` warns about every output its fresh copy has no hash for yet (the stages then make
    them): the demo drops exactly those lines, and times the stages from the rest."""
    copy = "/home/u/functiongemma/.dvc/tmp/exps/standalone/tmp0r2fw5zm"
    log = [f"WARNING: No file hash info found for '{copy}/models/base'. It won't be created.\n",
           f"WARNING: No file hash info found for '{copy}/data/raw'. It won't be created.\n",
           "Running stage 'fetch':\n",
           "WARNING: No file hash info found for '/home/u/functiongemma/models/base'. It won't be created.\n",
           "Running stage 'format':\n"]
    monkeypatch.setattr(demo, "stream", lambda cmd, root: iter(log))
    times = demo.run_experiment(Path("."), "demo-x", {})
    err = capsys.readouterr().err
    assert ".dvc/tmp/exps" not in err and log[3] in err  # a warning about the user's own workspace still shows
    assert "Running stage 'fetch':" in err and set(times) == {"fetch", "format"}
