"""The benchmark scripts under bench/: their recipes are what they claim, and they run end to end
on tiny models (the figures themselves are in bench/RESULTS.md, measured on the real 270M)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from stages import train
from pipeline.common import read_json
from pipeline.params import as_dict, load_params
from tests.helpers import quick_config, train_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import learning_curve  # noqa: E402
import recipe_accuracy  # noqa: E402
import train_bench  # noqa: E402


@pytest.fixture(scope="module")
def base_train() -> dict:
    return as_dict(load_params("train", path=ROOT / "params.yaml"))


def test_notebook_recipe_is_the_notebooks_way_and_ours_is_params_yaml(base_train):
    notebook = train_bench.recipe_params("notebook", base_train, None, None)
    assert (notebook.per_device_batch_size, notebook.gradient_accumulation_steps) == (4, 8)
    assert (notebook.padding_free, notebook.gradient_checkpointing, notebook.attn_implementation,
            notebook.skip_prompt_logits, notebook.lora.enabled) == (False, True, "eager", False, False)
    assert notebook.lr == base_train["lr"] and notebook.lr_scheduler == base_train["lr_scheduler"]
    assert as_dict(train_bench.recipe_params("ours", base_train, None, None)) == base_train
    detached = as_dict(train_bench.recipe_params("ours+detach_developer_turn", base_train, None, None))
    assert detached == dict(base_train, detach_developer_turn=True)


@pytest.mark.parametrize("name", list(train_bench.ABLATIONS))
def test_each_ablation_changes_one_thing_of_the_notebook_recipe(base_train, name):
    notebook = as_dict(train_bench.recipe_params("notebook", base_train, 2, 1))
    changed = as_dict(train_bench.recipe_params(name, base_train, 2, 1))
    assert [k for k in notebook if notebook[k] != changed[k]] == list(train_bench.ABLATIONS[name])


def test_synthetic_rows_have_mobile_actions_lengths():
    rows = train_bench.synthetic_examples(200, vocab_size=262144)
    lengths = [len(r["input_ids"]) for r in rows]
    completions = [sum(r["completion_mask"]) for r in rows]
    assert 630 < sum(lengths) / len(rows) < 670 and 35 < sum(completions) / len(rows) < 45
    assert all(r["input_ids"][0] == 2 and r["completion_mask"][-1] == 1 for r in rows)  # 2: <bos>


def test_notebook_loss_from_full_logits_equals_the_fused_head(tiny_base, tiny_tokenizer, tmp_path, monkeypatch,
                                                             golden_expected):
    """The benchmark's notebook recipe computes the loss from every position's logits; ours through
    TRL's fused head on the loss positions. Same loss: the recipes differ in speed, not in what they learn."""
    import types

    import torch

    monkeypatch.chdir(tmp_path)
    examples, _, _ = train.build_examples(tiny_tokenizer, golden_expected, max_length=997)
    params = train_params(per_device_batch_size=len(examples), gradient_checkpointing=False)
    trainer = train.build_trainer(params, tiny_base, tiny_tokenizer, examples, [], quick_config(params, tmp_path))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        fused = float(trainer.compute_loss(trainer.model, dict(batch)))
        trainer.compute_loss = types.MethodType(train_bench.model_forward_loss, trainer)
        full = float(trainer.compute_loss(trainer.model, dict(batch)))
    assert fused > 5 and full == pytest.approx(fused, rel=1e-5)


@pytest.mark.integration  # tiny trainings
def test_train_bench_runs_and_reports_the_same_losses(tmp_path, capsys):
    out = tmp_path / "bench.json"
    train_bench.main(["--synthetic", "--tiny", "--steps", "1", "--warmup", "1", "--rounds", "1", "--batch-size", "1",
                      "--grad-accum", "1", "--json", str(out)])
    report = read_json(out)
    summary = {row["recipe"]: row for row in report["summary"]}
    assert set(summary) == {"notebook", "ours"} and summary["notebook"]["ratio"] == 1.0
    assert all(run["steps"] == 1 and run["tokens"] > 500 for run in report["runs"])
    assert summary["ours"]["losses"] == pytest.approx(summary["notebook"]["losses"], rel=1e-4)
    captured = capsys.readouterr()
    assert "| ours |" in captured.out
    assert "  [notebook round 1] " in captured.err and "bench INFO step 2/2 (100%)" in captured.err


# A child as run_in_child runs one: `script --child spec.json`, output on stdout and stderr, result.json at the end.
CHILD = """
import json, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[2]).read_text())
print("loading")  # stdout, not flushed
print("step 1/2", file=sys.stderr)
sys.stderr.write("\\rgenerate 1/2\\rgenerate 2/2\\rgenerate 2/2\\n")  # a tqdm bar in a pipe, closing
time.sleep(spec["pause"])
print("step 2/2", file=sys.stderr)
if spec["fail"]:
    print("x" * 5000, file=sys.stderr)
    sys.exit("out of memory")
Path(spec["work"], "result.json").write_text(json.dumps({"done": True}))
"""


def run_tiny_child(tmp_path, label=None, pause=0.0, fail=False) -> dict:
    (tmp_path / "child.py").write_text(CHILD)
    return train_bench.run_in_child(str(tmp_path / "child.py"), {"recipe": "ours", "work": str(tmp_path), "pause": pause,
                                                                 "fail": fail}, label)


def test_run_in_child_streams_the_childs_output_to_stderr_with_its_label(tmp_path, capfd):
    assert run_tiny_child(tmp_path, "ours seed 43") == {"done": True}
    captured = capfd.readouterr()
    assert captured.err.splitlines() == ["  [ours seed 43] loading", "  [ours seed 43] step 1/2",
                                         "  [ours seed 43] generate 1/2", "  [ours seed 43] generate 2/2",
                                         "  [ours seed 43] step 2/2"]
    assert captured.out == ""


def test_run_in_child_passes_each_line_on_as_it_comes(tmp_path, monkeypatch):
    import time

    arrived = []

    class Clock:  # stands in for stderr: when did each line get here?
        def write(self, text):
            arrived.append((time.perf_counter(), text))

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Clock())
    run_tiny_child(tmp_path, pause=1.0)
    when = {text.strip(): t for t, text in arrived if text.strip()}
    assert when["[ours] step 2/2"] - when["[ours] step 1/2"] > 0.8  # not all at the end


def test_a_failing_child_raises_with_the_tail_of_its_output(tmp_path, capfd):
    with pytest.raises(RuntimeError) as failure:
        run_tiny_child(tmp_path, fail=True)
    message = str(failure.value)
    assert message.startswith("recipe ours failed:\n")
    assert message.endswith("out of memory\n") and len(message) == len("recipe ours failed:\n") + train_bench.TAIL_CHARS
    assert "  [ours] out of memory" in capfd.readouterr().err  # and the user saw it as it came


def test_a_progress_bar_in_a_child_refreshes_once_a_minute_not_per_row(tmp_path, capfd):
    (tmp_path / "child.py").write_text(
        "import json, sys, time\nfrom pathlib import Path\nfrom tqdm import tqdm\n"
        "for _ in tqdm(range(40), desc='rows'):\n    time.sleep(0.02)\n"  # 0.8 s: 8 refreshes at tqdm's default 0.1 s
        "Path(json.loads(Path(sys.argv[2]).read_text())['work'], 'result.json').write_text('{}')\n")
    train_bench.run_in_child(str(tmp_path / "child.py"), {"recipe": "ours", "work": str(tmp_path)})
    bar = [line for line in capfd.readouterr().err.splitlines() if line.startswith("  [ours] rows:")]
    assert [line.split("|")[0] for line in bar] == ["  [ours] rows:   0%", "  [ours] rows: 100%"]


def test_a_training_child_says_where_it_is_about_every_tenth_or_minute():
    def lines(total: int, seconds_per_step: float) -> list[int]:
        said, last_step, last_time = [], 0, 0.0
        for step in range(1, total + 1):
            now = step * seconds_per_step
            if train_bench.progress_due(step, total, last_step, now - last_time):
                said, last_step, last_time = said + [step], step, now
        return said

    assert lines(135, 4.0) == [1, 14, 27, 40, 53, 66, 79, 92, 105, 118, 131, 135]  # 10% = 13 steps = 52 s
    assert lines(135, 20.0)[:4] == [1, 4, 7, 10]  # the notebook's slow steps: a line a minute
    assert len(lines(5000, 0.01)) == 11  # thousands of fast steps: still about ten lines (1, 501, ..., 4501, 5000)
    assert lines(2, 1.0) == [1, 2]
    assert train_bench.progress_line(40, 135, 1.23456, 156.0) == (
        "step 40/135 (30%), loss 1.2346, 2.6 min so far, about 6.2 min left")
    assert train_bench.progress_line(1, 2, None, 3.0) == "step 1/2 (50%), loss -, 3 s so far, about 3 s left"


def test_train_bench_rejects_unknown_recipes():
    from pipeline.common import UserError

    with pytest.raises(UserError, match="unknown recipes"):
        train_bench.main(["--synthetic", "--tiny", "--only", "notebook,fastest"])


def test_accuracy_guard_uses_the_demo_hyperparameters_for_both(base_train):
    demo = recipe_accuracy.demo_train_values(base_train)
    from commands.demo import DEMO_PARAMS

    assert demo["lora"]["enabled"] is True and demo["lr"] == float(DEMO_PARAMS["train.lr"])
    assert demo["max_steps"] == int(DEMO_PARAMS["train.max_steps"])
    assert demo["precision"] == base_train["precision"]  # ours keeps the default's precision
    notebook, ours = (recipe_accuracy.recipe_values(r, demo) for r in ("notebook", "ours"))
    differ = {k for k in notebook if notebook[k] != ours[k]}
    assert differ <= {"padding_free", "gradient_checkpointing", "attn_implementation", "skip_prompt_logits",
                      "detach_developer_turn"}
    assert notebook["detach_developer_turn"] is False  # the notebook's full gradient
    assert (notebook["padding_free"], notebook["gradient_checkpointing"], notebook["attn_implementation"]) == (False, True, "eager")
    assert recipe_accuracy.recipe_values("ours", demo, 7)["seed"] == 7 and ours["seed"] == demo["seed"]


def run_of(seed: int, exact: list[bool], **figures) -> dict:
    """One recipe run as the child writes it (only what the comparison reads)."""
    share = sum(exact) / len(exact)
    return {"seed": seed, "exact": exact, "eval_lines": list(range(1, len(exact) + 1)), "exact_match": share,
            "function_name_accuracy": figures.get("names", share), "argument_f1": share, "normalized_match": share,
            "train_seconds": figures.get("seconds", 10.0)}


def test_guard_compares_the_two_distributions_over_seeds():
    runs = {"notebook": [run_of(42, [True, False, True, False], seconds=30.0), run_of(43, [True, True, False, False], seconds=34.0)],
            "ours": [run_of(42, [True, True, True, False]), run_of(43, [True, True, True, False])]}
    c = recipe_accuracy.compare_recipes(runs)
    assert c["seeds"] == [42, 43] and c["rows"] == 4
    assert c["notebook"]["exact_match"] == {"mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5}
    assert c["notebook"]["train_seconds"]["mean"] == 32.0 and c["notebook"]["train_seconds"]["sd"] == pytest.approx(2 ** 0.5 * 2)
    # per row, the share of right runs: notebook 1, 1/2, 1/2, 0; ours 1, 1, 1, 0 (tests/test_stats.py works it by hand)
    half = 1.959964 * (0.25 / 3) ** 0.5 / 2
    assert c["difference"]["exact_match"] == pytest.approx(0.25)
    assert (c["difference"]["ci_low"], c["difference"]["ci_high"]) == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)
    assert [(s["seed"], s["fixed"], s["broken"], s["p_value"]) for s in c["per_seed"]] == [(42, 1, 0, 1.0), (43, 1, 0, 1.0)]
    assert c["guard_holds"]
    lines = recipe_accuracy.comparison_lines(c)
    assert "| exact_match, mean of 2 | 50.0% | 75.0% | +25.0 points |" in lines
    assert f"| exact_match, 95% interval over rows | | | [{100 * (0.25 - half):+.1f}, {100 * (0.25 + half):+.1f}] points |" in lines
    assert "| train seconds, mean | 32 | 10 | 3.20x faster |" in lines
    assert lines[-1] == "ours +25.0 points vs the notebook recipe (mean of 2 seed(s) each): the guard (ours at most 2 points below) holds"


def test_guard_fails_three_points_below_and_warns_about_one_seed():
    notebook = [run_of(42, [True] * 70 + [False] * 30)]
    ours = [run_of(42, [True] * 67 + [False] * 33)]
    c = recipe_accuracy.compare_recipes({"notebook": notebook, "ours": ours})
    assert not c["guard_holds"] and c["notebook"]["exact_match"]["sd"] == 0.0
    assert recipe_accuracy.comparison_lines(c)[-1] == (
        "ours -3.0 points vs the notebook recipe (mean of 1 seed(s) each): the guard (ours at most 2 points below) FAILS; "
        "one seed per recipe says nothing of run-to-run noise: use --seeds 3")
    with pytest.raises(ValueError, match="the same seeds"):
        recipe_accuracy.compare_recipes({"notebook": notebook, "ours": [run_of(43, [True] * 100)]})
    with pytest.raises(ValueError, match="the same rows"):
        recipe_accuracy.compare_recipes({"notebook": notebook, "ours": [run_of(42, [True] * 99)]})


def test_guard_trains_each_recipe_once_per_seed_alternating(tiny_base, formatted_sample, tmp_path, monkeypatch, capsys):
    """main() with the child runs replaced: which runs it asks for, and what it prints and writes from them."""
    asked, labels = [], []

    def fake_child(script, spec, label):
        asked.append((spec["recipe"], spec["train"]["seed"], spec["eval_rows"]))
        labels.append(label)
        right = [True] * 3 + [False] * 1 if spec["recipe"] == "ours" else [True] * 2 + [False] * 2
        return {**run_of(spec["train"]["seed"], right), "rows": 4, "eval_seconds": 1.0, "losses": [2.0, 1.5],
                "precision": "fp32"}

    monkeypatch.setattr(recipe_accuracy, "run_in_child", fake_child)
    out = tmp_path / "guard.json"
    recipe_accuracy.main(["--base", str(tiny_base), "--data-dir", str(formatted_sample), "--eval-rows", "4",
                          "--seeds", "3", "--json", str(out)])
    assert asked == [("notebook", 42, 4), ("ours", 42, 4), ("notebook", 43, 4), ("ours", 43, 4), ("notebook", 44, 4),
                     ("ours", 44, 4)]
    assert labels[:2] == ["notebook seed 42", "ours seed 42"]  # what prefixes each run's streamed progress
    written = json.loads(out.read_text())
    assert [r["seed"] for r in written["runs"]["ours"]] == [42, 43, 44]
    assert written["comparison"]["difference"]["exact_match"] == pytest.approx(0.25)
    printed = capsys.readouterr().out
    assert "| exact_match, mean of 3 | 50.0% | 75.0% | +25.0 points |" in printed
    assert "seed 44: notebook 50.0%, ours 75.0%: 1 rows fixed, 0 broken" in printed
    assert "trained in 10 s (fp32), evaluated 4 rows" in printed
    assert "(mean of 3 seed(s) each): the guard (ours at most 2 points below) holds" in printed


@pytest.mark.integration  # tiny trainings
def test_accuracy_guard_runs_end_to_end(tiny_base, formatted_sample, tmp_path, capsys):
    out = tmp_path / "guard.json"
    recipe_accuracy.main(["--base", str(tiny_base), "--data-dir", str(formatted_sample), "--eval-rows", "2",
                          "--max-steps", "2", "--json", str(out)])
    results = json.loads(out.read_text())
    (notebook,), (ours,) = results["runs"]["notebook"], results["runs"]["ours"]
    assert notebook["seed"] == ours["seed"] == 42
    assert all(r["rows"] == 2 and len(r["losses"]) == 2 and len(r["exact"]) == 2 for r in (notebook, ours))
    # LoRA dropout draws different masks for padded and padding-free tensors: close, not equal
    assert ours["losses"] == pytest.approx(notebook["losses"], rel=2e-2)
    assert results["comparison"]["rows"] == 2 and len(results["comparison"]["per_seed"]) == 1
    captured = capsys.readouterr()
    assert "one seed per recipe says nothing of run-to-run noise: use --seeds 3" in captured.out
    # each child's progress reached stderr as it ran, with its run's label: training steps, then the eval's rows
    streamed = [line for line in captured.err.splitlines() if line.startswith("  [ours seed 42] ")]
    assert any("bench INFO step 2/2 (100%), loss " in line and " left" in line for line in streamed)
    assert any("generate: 100%" in line and "2/2 [" in line for line in streamed)


@pytest.mark.slow
def test_accuracy_guard_runs_end_to_end_with_two_seeds(tiny_base, formatted_sample, tmp_path, capsys):
    """Four real tiny trainings (about 3 minutes on 2 cores): another seed trains another model."""
    out = tmp_path / "guard.json"
    recipe_accuracy.main(["--base", str(tiny_base), "--data-dir", str(formatted_sample), "--eval-rows", "2",
                          "--max-steps", "2", "--seeds", "2", "--json", str(out)])
    results = json.loads(out.read_text())
    runs = results["runs"]
    assert {recipe: [r["seed"] for r in recipe_runs] for recipe, recipe_runs in runs.items()} == {
        "notebook": [42, 43], "ours": [42, 43]}
    assert all(r["rows"] == 2 and len(r["losses"]) == 2 and len(r["exact"]) == 2 for rs in runs.values() for r in rs)
    for a, b in zip(runs["notebook"], runs["ours"]):
        # LoRA dropout draws different masks for padded and padding-free tensors: close, not equal
        assert b["losses"] == pytest.approx(a["losses"], rel=2e-2)
    assert runs["ours"][0]["losses"] != pytest.approx(runs["ours"][1]["losses"], rel=1e-3)  # another seed, another run
    assert results["comparison"]["seeds"] == [42, 43] and results["comparison"]["rows"] == 2
    printed = capsys.readouterr().out
    assert "| exact_match, mean of 2 |" in printed and "seed 43: notebook" in printed
    assert "the guard (ours at most 2 points below)" in printed


def test_accuracy_guard_needs_a_seed():
    from pipeline.common import UserError

    with pytest.raises(UserError, match="--seeds 0: train each recipe at least once"):
        recipe_accuracy.main(["--seeds", "0"])


def test_flop_counts_match_the_270m_parameters_and_the_matmul_rate_is_measured():
    import torch
    from transformers import Gemma3TextConfig

    import flops

    config = Gemma3TextConfig(**train_bench.GEMMA3_270M)
    body, head = flops.body_parameters(config), config.hidden_size * config.vocab_size
    assert body + head == pytest.approx(268_098_176, rel=1e-3)  # the 270M's weights, less its norms
    one = flops.forward_flops(config, tokens=1, context=0, head_positions=1)
    assert one == 2 * (body + head)  # a multiply-add per weight
    assert flops.forward_flops(config, 10, 100, 1) - flops.forward_flops(config, 10, 0, 1) == flops.attention_flops(config, 10, 100)
    windowed = flops.attention_flops(config, 1, 4000) / flops.attention_flops(config, 1, 400)
    assert 10 > windowed > 1  # sliding layers see at most 512 keys; full ones all 4000
    assert flops.prefill_flops(config, [100, 200]) == pytest.approx(flops.forward_flops(config, 100, 50, 1)
                                                                    + flops.forward_flops(config, 200, 100, 1))
    assert flops.train_flops_per_token(config, 600, 0.05, lora=False) == pytest.approx(
        1.5 * flops.train_flops_per_token(config, 600, 0.05, lora=True))
    rate = flops.matmul_rate("cpu", torch.float32, size=256, seconds=0.2)
    assert 1e8 < rate < 1e13  # FLOP/s of this machine: between a phone from 2010 and a GPU


def test_learning_curve_trains_the_demo_recipe_with_the_changes_asked_for():
    from commands.demo import DEMO_PARAMS

    values = learning_curve.train_values(str(ROOT / "params.yaml"), learning_curve.parse_sets(
        ["train.lora.enabled=false", "train.lr=5e-5", "train.lora.target_modules=[q_proj, v_proj]"]), 300)
    assert values["max_steps"] == 300 and values["lr"] == 5e-5 and values["lora"]["enabled"] is False
    assert values["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert values["precision"] == DEMO_PARAMS["train.precision"]  # the demo's whole train recipe, precision too
    assert values["detach_developer_turn"] is True and values["per_device_batch_size"] == 2
    assert learning_curve.parse_checkpoints("200, 100,200", 300) == [100, 200, 300]


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "10", "--checkpoints", "5,20"], "[20] outside 1..10"),
    (["--max-steps", "10", "--checkpoints", "five"], "write optimizer steps separated by commas"),
    (["--max-steps", "10", "--set", "eval.limit=3"], "write it as train.KEY=VALUE"),
    (["--max-steps", "10", "--set", "train.max_steps=3"], "the run's length is --max-steps"),
    (["--max-steps", "10", "--set", "train.lora.nope.r=3"], "params.yaml has no section 'nope'"),
    (["--max-steps", "10", "--set", "train.lerning_rate=3"], "lerning_rate"),
    (["--max-steps", "0"], "train at least one step"),
])
def test_learning_curve_rejects_bad_arguments_before_loading_anything(argv, message):
    from pipeline.common import UserError

    with pytest.raises(UserError, match=re.escape(message)):
        learning_curve.main([*argv, "--base", "/nonexistent"])


def test_learning_curve_needs_the_validation_rows_it_judges(tiny_base, formatted_sample):
    from pipeline.common import UserError

    with pytest.raises(UserError, match=r"validation.jsonl holds no rows: hold validation rows out of train \(set format.validation_rows.*or pass --split eval"):
        learning_curve.main(["--max-steps", "2", "--base", str(tiny_base), "--data-dir", str(formatted_sample)])


@pytest.mark.integration  # tiny trainings
def test_learning_curve_runs_end_to_end(tiny_base, formatted_sample, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="bench")
    out = tmp_path / "curve.json"
    learning_curve.main(["--base", str(tiny_base), "--data-dir", str(formatted_sample), "--max-steps", "2",
                         "--checkpoints", "1", "--split", "eval", "--rows", "2", "--json", str(out)])
    curve = json.loads(out.read_text())
    assert [p["step"] for p in curve["points"]] == [1, 2] and [p["rows_seen"] for p in curve["points"]] == [2, 4]
    assert all(p["rows"] == 2 and 0 <= p["exact_match"] <= 1 and p["train_seconds"] > 0 for p in curve["points"])
    assert curve["points"][0]["train_seconds"] < curve["points"][1]["train_seconds"]
    printed = capsys.readouterr().out
    assert "| step | rows trained on | epochs | train minutes | eval exact match | loss |" in printed
    assert "(n = 2, 95% interval" in printed
    assert [r.getMessage().split(",")[0] for r in caplog.records if r.name == "bench"] == ["step 1/2 (50%)", "step 2/2 (100%)"]
