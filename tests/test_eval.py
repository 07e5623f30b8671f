"""The eval stage (stages/eval.py): row selection, metrics layout, review files, DVC config and plots."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import eval as eval_stage
from pipeline import functiongemma as fg
from pipeline import scoring
from pipeline.common import UserError, read_json
from pipeline.examples import example_id
from pipeline.params import parse_section
from pipeline.generate import Generation
from pipeline.stats import Z95, paired_difference, wilson_interval

ROOT = Path(__file__).resolve().parents[1]


def gen(texts: list[str], stopped: list[bool] | None = None, seconds: float = 2.0) -> Generation:
    return Generation(texts=texts, token_ids=[[7] * 3 for _ in texts], stopped=stopped or [True] * len(texts),
                      prompt_tokens=[10] * len(texts), seconds=seconds)


def rows_with_targets() -> list[dict]:
    email = {"name": "send_email", "arguments": {"to": "a@b.c", "subject": "Hi"}}
    light = {"name": "turn_on_flashlight", "arguments": {}}
    rows = [
        {"prompt": "<bos>p0", "target_calls": [email], "user": "mail a@b.c saying Hi", "line": 11, "_line": 1},
        {"prompt": "<bos>p1", "target_calls": [light], "user": "light on", "line": 12, "_line": 2},
        {"prompt": "<bos>p2", "target_calls": [light], "user": "torch please", "line": 13, "_line": 3},
    ]
    return [{**r, "id": example_id(r)} for r in rows]


def completion(*calls: dict) -> str:
    return "".join(fg.render_call(fg.Call(c["name"], c["arguments"])) for c in calls) + fg.START_RESPONSE


def results_for(rows: list[dict], texts: dict[str, list[str]]) -> dict[str, eval_stage.ModelResult]:
    return {name: eval_stage.ModelResult(list(range(len(t))), gen(t),
                                         [scoring.score_row(r["target_calls"], x) for r, x in zip(rows, t)])
            for name, t in texts.items()}


# ---------------------------------------------------------------- pure parts


def test_metrics_are_flat_per_model_with_deltas():
    rows = rows_with_targets()
    right = [completion(*r["target_calls"]) for r in rows]
    results = results_for(rows, {"finetuned": [right[0], right[1], "Sure!<end_of_turn>"], "base": ["x", "y", "z"]})
    metrics = eval_stage.build_metrics(results)
    assert metrics["rows_finetuned"] == metrics["rows_base"] == metrics["rows_paired"] == 3
    assert metrics["rows_expecting_none_finetuned"] == 0
    assert metrics["exact_match_finetuned"] == pytest.approx(2 / 3)
    assert metrics["exact_match_base"] == 0.0
    assert metrics["exact_match_delta"] == pytest.approx(2 / 3)
    assert metrics["missed_call_rate_finetuned"] == pytest.approx(1 / 3)
    assert metrics["missed_call_rate_delta"] == pytest.approx(1 / 3 - 1)
    assert metrics["examples_per_s_finetuned"] == pytest.approx(1.5)  # 3 rows in 2 s
    assert metrics["generated_tokens_per_s_base"] == pytest.approx(4.5)  # 9 tokens in 2 s
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and "." not in k for k, v in metrics.items())
    # every key is <metric>_<model> or <metric>_delta, an accuracy's with its n / interval / p-value suffix
    shape = re.compile(r"(rows_paired|[a-z0-9_]+?_(finetuned|base)(_n|_ci_low|_ci_high)?"
                       r"|[a-z0-9_]+?_delta(_n|_ci_low|_ci_high|_p_value)?)")
    assert [k for k in metrics if not shape.fullmatch(k)] == []
    assert list(metrics)[:4] == ["exact_match_finetuned", "exact_match_finetuned_n", "exact_match_finetuned_ci_low",
                                 "exact_match_finetuned_ci_high"]  # the headline leads the file


def test_every_accuracy_has_its_rows_and_interval_and_the_delta_a_paired_one():
    rows = rows_with_targets()
    right = [completion(*r["target_calls"]) for r in rows]
    results = results_for(rows, {"finetuned": [right[0], right[1], "Sure!<end_of_turn>"], "base": ["x", right[1], "z"]})
    metrics = eval_stage.build_metrics(results)
    for accuracy in scoring.ACCURACIES:
        for model in ("finetuned", "base"):
            assert {f"{accuracy}_{model}{s}" for s in ("", "_n", "_ci_low", "_ci_high")} <= metrics.keys()
        assert {f"{accuracy}_delta{s}" for s in ("", "_n", "_ci_low", "_ci_high", "_p_value")} <= metrics.keys()
    # 2 of 3 right: Wilson's interval of 2/3; the base 1 of 3
    assert metrics["exact_match_finetuned_n"] == 3
    assert (metrics["exact_match_finetuned_ci_low"], metrics["exact_match_finetuned_ci_high"]) == wilson_interval(2, 3)
    assert (metrics["exact_match_base_ci_low"], metrics["exact_match_base_ci_high"]) == wilson_interval(1, 3)
    # row 1 right for both, row 0 fixed by fine-tuning, row 2 wrong for both: 1 fixed, 0 broken
    change = paired_difference([False, True, False], [True, True, False])
    assert metrics["exact_match_delta"] == pytest.approx(1 / 3) and metrics["exact_match_delta_n"] == 3
    assert (metrics["exact_match_delta_ci_low"], metrics["exact_match_delta_ci_high"]) == (change.ci_low, change.ci_high)
    assert metrics["exact_match_delta_p_value"] == 1.0  # one discordant row proves nothing
    # these rows all expect a call: no-call accuracy is over none of them, and says so
    assert metrics["no_call_accuracy_finetuned_n"] == 0 and metrics["rows_expecting_none_finetuned"] == 0
    assert (metrics["no_call_accuracy_finetuned_ci_low"], metrics["no_call_accuracy_finetuned_ci_high"]) == (0.0, 1.0)


def test_no_call_rows_and_parallel_calls_in_another_order():
    email = {"name": "send_email", "arguments": {"to": "a@b.c", "subject": "Hi"}}
    light = {"name": "turn_on_flashlight", "arguments": {}}
    rows = [{"prompt": "<bos>p0", "target_calls": [email, light], "_line": 1, "id": "a"},
            {"prompt": "<bos>p1", "target_calls": [], "_line": 2, "id": "b"},
            {"prompt": "<bos>p2", "target_calls": [], "_line": 3, "id": "c"}]
    texts = {"finetuned": [completion(light, email), "No can do.<end_of_turn>", completion(light)],
             "base": [completion(email, light), completion(light), "Nope.<end_of_turn>"]}
    metrics = eval_stage.build_metrics(results_for(rows, texts))
    assert metrics["exact_match_finetuned"] == pytest.approx(1 / 3)  # the two calls in the other order do not count
    assert metrics["exact_match_any_order_finetuned"] == pytest.approx(2 / 3)  # they do here
    assert metrics["exact_match_any_order_base"] == pytest.approx(2 / 3)
    assert metrics["no_call_accuracy_finetuned"] == 0.5 and metrics["no_call_accuracy_finetuned_n"] == 2
    assert metrics["no_call_accuracy_delta"] == 0.0 and metrics["no_call_accuracy_delta_n"] == 2
    records = eval_stage.prediction_records(rows, results_for(rows, texts))
    assert [(r["model"], r["exact"], r["exact_any_order"]) for r in records[:3]] == [
        ("finetuned", False, True), ("finetuned", True, True), ("finetuned", False, False)]


def test_metrics_without_base_have_no_deltas():
    rows = rows_with_targets()
    metrics = eval_stage.build_metrics(results_for(rows, {"finetuned": ["a", "b", "c"]}))
    assert "exact_match_finetuned" in metrics and not any(k.endswith(("_base", "_delta")) for k in metrics)


def test_base_on_a_subset_pairs_the_delta_over_the_shared_rows():
    rows = rows_with_targets()
    right = [completion(*r["target_calls"]) for r in rows]
    params = parse_section("eval", {"batch_size": 2, "max_new_tokens": 8, "limit": 0, "compare_base": True,
                                     "base_limit": 2, "base_max_new_tokens": 4, "precision": "auto", "prefill_batch": 0,
                                     "split": "eval"})
    plan = eval_stage.model_rows(len(rows), params)
    assert plan == {"finetuned": [0, 1, 2], "base": [0, 1]}  # evenly spaced: rows 0 and 1 of 3
    tuned = eval_stage.ModelResult([0, 1, 2], gen([right[0], "x", right[2]]),
                                   [scoring.score_row(r["target_calls"], t) for r, t in zip(rows, [right[0], "x", right[2]])])
    base = eval_stage.ModelResult([0, 1], gen([right[0], "y"]),
                                  [scoring.score_row(rows[i]["target_calls"], t) for i, t in zip([0, 1], [right[0], "y"])])
    metrics = eval_stage.build_metrics({"finetuned": tuned, "base": base})
    assert (metrics["rows_finetuned"], metrics["rows_base"], metrics["rows_paired"]) == (3, 2, 2)
    assert metrics["exact_match_finetuned"] == pytest.approx(2 / 3) and metrics["exact_match_base"] == 0.5
    assert metrics["exact_match_delta"] == 0.0  # on rows 0 and 1 both got one right
    assert metrics["exact_match_delta_n"] == 2 and metrics["exact_match_finetuned_n"] == 3
    records = eval_stage.prediction_records(rows, {"finetuned": tuned, "base": base})
    assert [(r["model"], r["eval_line"]) for r in records] == [("finetuned", 1), ("finetuned", 2), ("finetuned", 3),
                                                               ("base", 1), ("base", 2)]
    assert [r["exact"] for r in records] == [True, False, True, True, False]
    assert records[1]["id"] == records[4]["id"] == rows[1]["id"] and records[1]["raw"] == "x"
    mismatches = eval_stage.mismatch_records(rows, {"finetuned": tuned, "base": base})
    assert len(mismatches) == 1 and mismatches[0]["base"]["raw"] == "y"
    assert eval_stage.model_rows(3, dataclasses.replace(params, compare_base=False)) == {"finetuned": [0, 1, 2]}


def test_mismatches_hold_every_wrong_row_with_both_models():
    rows = rows_with_targets()
    right = [completion(*r["target_calls"]) for r in rows]
    broken = "<start_function_call>call:turn_on_flashlight{"
    results = results_for(rows, {"finetuned": [right[0], broken, right[2]], "base": [right[0], "x", "y"]})
    records = eval_stage.mismatch_records(rows, results)
    assert len(records) == 1
    record = records[0]
    assert record["eval_line"] == 2 and record["source_line"] == 12 and record["user"] == "light on"
    assert record["target_calls"] == [{"name": "turn_on_flashlight", "arguments": {}}]
    assert record["finetuned"]["raw"] == broken and record["finetuned"]["malformed"] and record["finetuned"]["calls"] == []
    assert record["base"] == {"raw": "x", "calls": [], "exact": False, "exact_any_order": False, "normalized": False,
                              "malformed": False, "error": "", "stopped": True}


def test_confusion_records_are_one_per_aligned_call():
    rows = rows_with_targets()
    results = results_for(rows, {"finetuned": [completion({"name": "show_map", "arguments": {"query": "x"}}), "no", "no"]})
    assert eval_stage.confusion_records(results["finetuned"].scores) == [
        {"expected": "send_email", "called": "show_map"},
        {"expected": "turn_on_flashlight", "called": scoring.NO_CALL},
        {"expected": "turn_on_flashlight", "called": scoring.NO_CALL},
    ]


# ---------------------------------------------------------------- the stage


def eval_params(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["eval"].update({"batch_size": 4, "max_new_tokens": 4, "limit": 6, "compare_base": True, **overrides})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def stage_args(tmp_path: Path, params: Path, data: Path, base: Path, finetuned: Path) -> list[str]:
    out = tmp_path / "metrics"
    return ["--params", str(params), "--data", str(data), "--base-model", str(base), "--finetuned-model", str(finetuned),
            "--metrics", str(out / "eval.json"), "--per-function", str(out / "eval_per_function.json"),
            "--confusion", str(out / "eval_confusion.json"), "--mismatches", str(out / "eval_mismatches.jsonl"),
            "--predictions", str(out / "predictions.jsonl"), "--record", str(out / "record.json")]


@pytest.mark.integration  # the eval stage on two tiny models
def test_stage_on_tiny_models_writes_every_declared_output(tmp_path, tiny_base, formatted_sample):
    args = stage_args(tmp_path, eval_params(tmp_path), formatted_sample / "eval.jsonl", tiny_base, tiny_base)
    eval_stage.main(args)
    out = tmp_path / "metrics"
    assert {p.name for p in out.iterdir()} == {"eval.json", "eval_per_function.json", "eval_confusion.json",
                                              "eval_mismatches.jsonl", "predictions.jsonl", "record.json"}
    metrics = read_json(out / "eval.json")
    assert metrics["rows_finetuned"] == metrics["rows_base"] == 6
    # The same random model on the same prompts: the two columns agree and the deltas are zero.
    assert metrics["exact_match_finetuned"] == metrics["exact_match_base"] == 0.0
    assert metrics["exact_match_delta"] == 0.0 and metrics["generated_tokens_finetuned"] == 6 * 4
    assert metrics["truncated_rate_finetuned"] == 1.0 and metrics["examples_per_s_finetuned"] > 0
    mismatches = [json.loads(line) for line in (out / "eval_mismatches.jsonl").read_text().splitlines()]
    assert len(mismatches) == 6 and mismatches[0]["finetuned"]["raw"] == mismatches[0]["base"]["raw"]
    table = read_json(out / "eval_per_function.json")
    assert isinstance(table, list) and sum(r["rows"] for r in table) >= 6
    assert all({"function", "rows", "exact_match_finetuned", "exact_match_base"} <= r.keys() for r in table)
    assert len(read_json(out / "eval_confusion.json")) >= 6


def test_stage_scores_what_the_models_generate(tmp_path, formatted_sample, monkeypatch):
    """With generation replaced by an oracle (fine-tuned) and silence (base), the metrics are known exactly."""
    rows = [json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()]
    oracle = {r["prompt"]: r["completion"] for r in rows}
    for name in ("base", "finetuned"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")

    def fake_load(path, precision):
        assert precision == "auto"  # eval.precision as committed
        return Path(path).name, None

    def fake_generate(model, tokenizer, prompts, *, max_new_tokens, batch_size, prefill_batch, progress=True):
        texts = [oracle[p] if model == "finetuned" else "I cannot help.<end_of_turn>" for p in prompts]
        return gen(texts, seconds=1.0)

    monkeypatch.setattr(eval_stage, "load_model", fake_load)
    monkeypatch.setattr(eval_stage, "generate", fake_generate)
    args = stage_args(tmp_path, eval_params(tmp_path, limit=0), formatted_sample / "eval.jsonl", tmp_path / "base", tmp_path / "finetuned")
    eval_stage.main(args)
    metrics = read_json(tmp_path / "metrics" / "eval.json")
    assert metrics["rows_finetuned"] == len(rows)
    assert metrics["exact_match_finetuned"] == 1.0 and metrics["argument_f1_finetuned"] == 1.0
    assert metrics["exact_match_base"] == 0.0 and metrics["missed_call_rate_base"] == 1.0
    assert metrics["exact_match_delta"] == 1.0
    n = len(rows)  # all right: Wilson's lower bound is n / (n + z^2); all wrong: its upper z^2 / (n + z^2)
    assert metrics["exact_match_finetuned_ci_low"] == pytest.approx(n / (n + Z95**2))
    assert metrics["exact_match_base_ci_high"] == pytest.approx(Z95**2 / (n + Z95**2))
    assert metrics["exact_match_delta_ci_low"] > 0.9 and metrics["exact_match_delta_p_value"] < 1e-30
    assert metrics["exact_match_any_order_finetuned"] == 1.0 and metrics["no_call_accuracy_finetuned_n"] == 0
    assert (tmp_path / "metrics" / "eval_mismatches.jsonl").read_text() == ""
    predictions = [json.loads(line) for line in (tmp_path / "metrics" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 * len(rows)
    assert {(p["model"], p["exact"]) for p in predictions} == {("finetuned", True), ("base", False)}
    assert [p["id"] for p in predictions if p["model"] == "base"] == [example_id(r) for r in rows]
    table = read_json(tmp_path / "metrics" / "eval_per_function.json")
    assert {r["function"] for r in table} == {n for r in rows for n in r["function_names"]}
    assert all(r["exact_match_finetuned"] == 1.0 and r["exact_match_base"] == 0.0 for r in table)


def test_missing_finetuned_model_fails_before_any_loading(tmp_path, formatted_sample, tiny_base, monkeypatch):
    monkeypatch.setattr(eval_stage, "load_model", lambda path, **kw: pytest.fail("a model was loaded"))
    args = stage_args(tmp_path, eval_params(tmp_path), formatted_sample / "eval.jsonl", tiny_base, tmp_path / "models" / "finetuned")
    with pytest.raises(UserError, match="does not exist"):
        eval_stage.main(args)
    args = stage_args(tmp_path, eval_params(tmp_path), tmp_path / "nope.jsonl", tiny_base, tiny_base)
    with pytest.raises(UserError, match="dvc repro format"):
        eval_stage.main(args)


def test_bad_eval_param_is_named(tmp_path, formatted_sample, tiny_base):
    args = stage_args(tmp_path, eval_params(tmp_path, batch_size=0), formatted_sample / "eval.jsonl", tiny_base, tiny_base)
    with pytest.raises(UserError, match="eval.batch_size"):
        eval_stage.main(args)


# ---------------------------------------------------------------- dvc.yaml and DVC's own rendering


def dvc_eval_stage() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["eval"]


def test_dvc_cmd_uses_only_known_arguments_and_declares_every_output():
    stage = dvc_eval_stage()
    argv = shlex.split(stage["cmd"])
    assert argv[:3] == ["python", "-m", "stages.eval"]
    flags = {a for a in argv[3:] if a.startswith("--")}
    assert flags == {"--params", "--data", "--base-model", "--finetuned-model", "--metrics", "--per-function",
                     "--confusion", "--mismatches", "--predictions", "--record"}
    values = dict(zip(argv[3::2], argv[4::2]))
    declared = {next(iter(o)) if isinstance(o, dict) else o for key in ("metrics", "plots", "outs") for o in stage[key]}
    assert declared == {values[f] for f in ("--metrics", "--per-function", "--confusion", "--mismatches",
                                            "--predictions", "--record")}
    assert {values["--data"], values["--base-model"], values["--finetuned-model"]} <= set(stage["deps"])
    assert stage["params"] == ["eval"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.integration
def test_dvc_renders_the_plots_and_diffs_the_metrics(tmp_path):
    """`dvc plots show` draws the per-function bars and `dvc metrics diff --md` shows the change."""
    dvc = [sys.executable, "-m", "dvc"]
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    stage = dvc_eval_stage()
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval": {**stage, "cmd": "true", "deps": []}}}))
    rows = rows_with_targets()
    right = [completion(*r["target_calls"]) for r in rows]

    def write_outputs(texts: list[str]) -> None:
        results = results_for(rows, {"finetuned": texts, "base": ["x", "y", "z"]})
        from pipeline.common import write_json
        write_json(repo / "metrics/eval.json", eval_stage.build_metrics(results))
        write_json(repo / "metrics/eval_per_function.json", scoring.per_function({k: r.scores for k, r in results.items()}))
        write_json(repo / "metrics/eval_confusion.json", eval_stage.confusion_records(results["finetuned"].scores))
        (repo / "metrics/eval_mismatches.jsonl").write_text("")

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    write_outputs(["a", "b", "c"])
    run(*git, "add", "-A")
    run(*git, "commit", "-qm", "before")
    write_outputs([right[0], right[1], "c"])
    diff = run(*dvc, "metrics", "diff", "--md")
    line = next(l for l in diff.splitlines() if "| exact_match_finetuned " in l)
    assert [c.strip() for c in line.strip("|").split("|")][2:] == ["0.0", "0.66667", "0.66667"]
    low = next(l for l in diff.splitlines() if "| exact_match_finetuned_ci_low " in l)
    assert [c.strip() for c in low.strip("|").split("|")][2:4] == ["0.0", f"{wilson_interval(2, 3)[0]:.5f}"]
    plots = json.loads(run(*dvc, "plots", "show", "--json"))["data"]
    bars = plots["metrics/eval_per_function.json"][0]
    spec = bars["content"]
    assert bars["type"] == "vega" and spec["mark"]["type"] == "bar"
    assert spec["encoding"]["y"]["field"] == "function" and spec["encoding"]["y"]["type"] == "nominal"
    assert spec["encoding"]["x"]["field"] == "exact_match_finetuned" and spec["encoding"]["x"]["type"] == "quantitative"
    values = {d["function"]: d["exact_match_finetuned"] for d in spec["data"]["values"]}
    assert values == {"send_email": 1.0, "turn_on_flashlight": 0.5}
    confusion = plots["metrics/eval_confusion.json"][0]["content"]
    pairs = {(d["expected"], d["called"]) for d in confusion["data"]["values"]}
    assert pairs == {("send_email", "send_email"), ("turn_on_flashlight", "turn_on_flashlight"),
                     ("turn_on_flashlight", scoring.NO_CALL)}


def test_compare_base_false_evaluates_only_the_finetuned_model(tmp_path, formatted_sample, monkeypatch):
    loaded = []
    (tmp_path / "finetuned").mkdir()
    (tmp_path / "finetuned" / "config.json").write_text("{}")
    monkeypatch.setattr(eval_stage, "load_model", lambda path, **kw: (loaded.append(Path(path).name), None))
    monkeypatch.setattr(eval_stage, "generate", lambda model, tok, prompts, **kw: gen(["nothing"] * len(prompts)))
    args = stage_args(tmp_path, eval_params(tmp_path, compare_base=False, limit=5), formatted_sample / "eval.jsonl",
                      tmp_path / "no-base-needed", tmp_path / "finetuned")
    eval_stage.main(args)
    assert loaded == ["finetuned"]
    metrics = read_json(tmp_path / "metrics" / "eval.json")
    assert metrics["rows_finetuned"] == 5 and metrics["exact_match_finetuned"] == 0.0
    assert not any(k.endswith(("_base", "_delta")) for k in metrics)
    records = [json.loads(line) for line in (tmp_path / "metrics" / "eval_mismatches.jsonl").read_text().splitlines()]
    assert len(records) == 5 and all("base" not in r and r["finetuned"]["raw"] == "nothing" for r in records)
