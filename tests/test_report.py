"""`make report` (commands/report.py) and the pull-request workflow that posts it.

A temporary git + DVC project stands in for the real pipeline (seconds, no model): a `score` stage
whose metric follows `train.lr`, and an `eval` stage whose fine-tuned model answers 48 rows, wrong on
the rows fake.yaml's `wrong` lists (the base model on none), written by the eval stage's own code
(`build_metrics`, `prediction_records`). `dvc exp run`s make experiments that differ on known rows;
the real Makefile target compares them through DVC.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from commands import report
from pipeline.stats import paired_difference, wilson_interval
from tests.helpers import DVC, ROOT, make_project, run, set_params

WORKFLOW = ROOT / ".github" / "workflows" / "pr.yml"
ROWS = 48

# A stage that turns train.lr into a metric, so a param change moves a metric.
SCORE_PY = """\
import json, os
from ruamel.yaml import YAML
train = YAML(typ="safe").load(open("params.yaml"))["train"]
os.makedirs("metrics", exist_ok=True)
json.dump({"loss": round(1 / (1 + float(train["lr"]) * 1e4), 4), "max_steps": train["max_steps"]},
          open("metrics/score.json", "w"))
"""
# The eval stand-in: ROWS rows (eval.limit of them, evenly spaced, as the real stage picks them); the
# fine-tuned model is wrong on fake.yaml's `wrong` rows (0-based), the base model on every row.
FAKE_EVAL_PY = """\
import argparse
from ruamel.yaml import YAML
from pipeline import functiongemma as fg, scoring
from pipeline.common import write_json, write_jsonl
from pipeline.examples import example_id, select_rows
from pipeline.generate import Generation
from stages import eval as eval_stage

parser = argparse.ArgumentParser()
parser.add_argument("--metrics")
parser.add_argument("--predictions")
args = parser.parse_args()
limit = YAML(typ="safe").load(open("params.yaml"))["eval"]["limit"]
wrong = set(YAML(typ="safe").load(open("fake.yaml"))["wrong"])
rows = []
for i in range(%d):
    row = {"prompt": f"<bos>request {i}", "target_calls": [{"name": "show_map", "arguments": {"query": f"place {i}"}}],
           "user": f"request {i}", "_line": i + 1}
    rows.append({**row, "id": example_id(row)})
rows = select_rows(rows, limit)
right = lambda r: "".join(fg.render_call(fg.Call(c["name"], c["arguments"])) for c in r["target_calls"]) + fg.START_RESPONSE
texts = {"finetuned": ["no" if r["_line"] - 1 in wrong else right(r) for r in rows], "base": ["no"] * len(rows)}
results = {}
for name, t in texts.items():
    generation = Generation(texts=t, token_ids=[[7]] * len(t), stopped=[True] * len(t), prompt_tokens=[5] * len(t), seconds=1.0)
    results[name] = eval_stage.ModelResult(list(range(len(rows))), generation,
                                           [scoring.score_row(r["target_calls"], x) for r, x in zip(rows, t)])
write_json(args.metrics, eval_stage.build_metrics(results))
write_jsonl(args.predictions, eval_stage.prediction_records(rows, results))
""" % ROWS
DVC_YAML = """\
stages:
  score:
    cmd: python score.py
    deps: [score.py]
    params: [train.lr, train.max_steps]
    metrics:
      - metrics/score.json:
          cache: false
  eval:
    cmd: python fake_eval.py --metrics metrics/eval.json --predictions data/eval/predictions.jsonl
    deps: [fake_eval.py]
    params:
      - eval.limit
      - fake.yaml:
          - wrong
    metrics:
      - metrics/eval.json:
          cache: false
    outs:
      - data/eval/predictions.jsonl:
          cache: false
"""
# experiment -> (train.lr, rows the fine-tuned model gets wrong, eval.limit); exp-2 runs last and stays in the workspace
EXPERIMENTS = {
    "exp-1": (1e-4, range(0, 20), 0),  # 28 of 48 right
    "exp-3": (1e-4, range(0, 18), 0),  # 30 of 48: fixes rows 18 and 19 of exp-1
    "exp-4": (1e-4, range(0, 0), 24),  # every row right, but only 24 of them (the even ones) evaluated
    "exp-2": (2e-5, range(16, 24), 0),  # 40 of 48: fixes rows 0-15 of exp-1, breaks rows 20-23
}


def link_venv(repo: Path) -> None:
    """`repo/.venv` as an alias of the running venv, marked installed: `make` targets run without reinstalling."""
    venv = repo / ".venv"
    venv.mkdir()
    source = Path(sys.prefix)
    for name in ("bin", "lib", "pyvenv.cfg"):
        if (source / name).exists():
            (venv / name).symlink_to(source / name)
    (venv / ".installed").touch()  # newer than pyproject.toml: `make setup` is satisfied


def make(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=repo, capture_output=True, text=True,
                            timeout=300, env=env)
    if check:
        assert result.returncode == 0, f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def table_rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]


def table_row(markdown: str, *first_cells: str) -> list[str]:
    """The cells of the one markdown table row that starts with `first_cells`."""
    found = [r for r in table_rows(markdown) if r[:len(first_cells)] == list(first_cells)]
    assert len(found) == 1, f"expected one row starting {first_cells} in:\n{markdown}"
    return found[0]


def section(markdown: str, title: str) -> str:
    """The text of one `### title` section of the report."""
    start = markdown.index(f"### {title}")
    end = markdown.find("\n### ", start + 1)
    return markdown[start:end if end != -1 else None]


def share(k: int, n: int) -> str:
    """How the report writes k of n right: the share with Wilson's interval and the rows."""
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}], n = {n}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Branch `main` (train.lr 3e-5, never run), then the EXPERIMENTS (exp-2 left in the workspace)."""
    repo = make_project(tmp_path_factory.mktemp("report"), {"train.lr": 3e-5})
    (repo / "score.py").write_text(SCORE_PY)
    (repo / "fake_eval.py").write_text(FAKE_EVAL_PY)
    (repo / "fake.yaml").write_text("wrong: []  # rows the stand-in's fine-tuned model answers wrong\n")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "stand-in pipeline"], repo)
    run(["git", "branch", "-M", "main"], repo)
    link_venv(repo)
    for name, (lr, wrong, limit) in EXPERIMENTS.items():
        run(DVC + ["exp", "run", "-n", name, "-S", f"train.lr={lr}", "-S", f"eval.limit={limit}",
                   "-S", f"fake.yaml:wrong=[{','.join(map(str, wrong))}]"], repo)
    return repo


@pytest.mark.integration
def test_report_pairs_two_experiments_and_says_better(project):
    out = make(project, "report", "A=exp-1", "B=exp-2").stdout

    assert "`exp-1` → `exp-2`" in out
    # the headline comes first: each side's exact match with its interval and rows
    assert out.index("### Headline") < out.index("### Paired comparison") < out.index("### Metrics") < out.index("### Params")
    headline = section(out, "Headline")
    assert table_row(headline, "fine-tuned") == ["fine-tuned", share(28, ROWS), share(40, ROWS)]
    assert table_row(headline, "base")[1:] == [share(0, ROWS)] * 2
    assert "`.litertlm`" not in headline  # this project converts nothing
    # rows 0-15 fixed, 20-23 broken: +12 of 48
    paired = section(out, "Paired comparison")
    assert "Both sides evaluated the same 48 rows." in paired
    expected = paired_difference([i >= 20 for i in range(ROWS)], [not 16 <= i < 24 for i in range(ROWS)])
    assert (expected.fixed, expected.broken) == (16, 4)
    assert table_row(paired, "exact match") == [
        "exact match", "48", "16", "4", "58.3%", "83.3%", "+25.0 points",
        f"[{100 * expected.ci_low:+.1f}, {100 * expected.ci_high:+.1f}]", "0.0118"]
    assert table_row(paired, "exact match, any order")[1:4] == ["48", "16", "4"]
    assert f"**Verdict (exact match):** better: +25.0 points, 95% interval [{100 * expected.ci_low:+.1f}," in paired

    # DVC's tables, the headline rows first (DVC itself puts argument_* before exact_match_*), the rest folded
    metrics = section(out, "Metrics")
    shown, folded = metrics.split("<details>")
    header = ["Path", "Metric", "exp-1", "exp-2", "Change"]
    assert [(r[0], r[1]) for r in table_rows(shown)[2:]] == [("metrics/eval.json", k) for k in (
        "exact_match_finetuned", "exact_match_finetuned_ci_low", "exact_match_finetuned_ci_high", "exact_match_delta",
        "exact_match_delta_ci_low", "exact_match_delta_ci_high", "exact_match_delta_p_value")]
    assert table_rows(shown)[0] == header
    rest = [(r[0], r[1]) for r in table_rows(folded)[2:]]
    assert rest[0] == ("metrics/eval.json", "argument_f1_delta") and rest[-1] == ("metrics/score.json", "loss")
    assert f"<summary>{len(rest)} more changed metrics</summary>" in folded and folded.rstrip().endswith("</details>")
    assert table_row(out, "metrics/eval.json", "exact_match_finetuned")[2:] == ["0.58333", "0.83333", "0.25"]
    assert table_row(out, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "0.0001", "2e-05"]
    assert table_row(out, "fake.yaml", "wrong")[0:2] == ["fake.yaml", "wrong"]
    assert "max_steps" not in out  # unchanged params and metrics stay out of the review


@pytest.mark.integration
def test_report_says_within_noise_when_two_rows_differ(project):
    out = make(project, "report", "A=exp-1", "B=exp-3").stdout

    paired = section(out, "Paired comparison")
    expected = paired_difference([i >= 20 for i in range(ROWS)], [i >= 18 for i in range(ROWS)])
    assert table_row(paired, "exact match")[1:] == ["48", "2", "0", "58.3%", "62.5%", "+4.2 points",
                                                   f"[{100 * expected.ci_low:+.1f}, {100 * expected.ci_high:+.1f}]", "0.5"]
    assert expected.ci_low < 0 < expected.ci_high
    assert "**Verdict (exact match):** within noise at n = 48 (+4.2 points, 95% interval [" in paired


@pytest.mark.integration
def test_report_says_when_the_sides_evaluated_different_rows(project):
    out = make(project, "report", "A=exp-1", "B=exp-4").stdout

    paired = section(out, "Paired comparison")
    assert ("**The two sides did not evaluate the same rows**: `exp-1` evaluated 48, `exp-4` 24; the 24 rows both "
            "evaluated are compared (24 only in `exp-1`, 0 only in `exp-4`).") in paired
    # of the 24 even rows, exp-1 had 0, 2, ..., 18 wrong: 10 fixed, none broken
    assert table_row(paired, "exact match")[1:6] == ["24", "10", "0", "58.3%", "100.0%"]
    assert "**Verdict (exact match):** better: +41.7 points" in paired
    assert table_row(section(out, "Headline"), "fine-tuned")[2] == share(24, 24)


@pytest.mark.integration
def test_report_defaults_to_main_vs_workspace_and_says_main_has_no_predictions(project):
    out = make(project, "report").stdout

    assert "`main` → `workspace`" in out
    assert ("No paired comparison: `main` has no `data/eval/predictions.jsonl` (the eval stage has not run there)."
            in section(out, "Paired comparison"))
    headline = section(out, "Headline")
    assert table_row(headline, "fine-tuned") == ["fine-tuned", "—", share(40, ROWS)]
    assert "`main` has no `metrics/eval.json`: the eval stage has not run there." in headline
    # the diffs are there all the same
    assert table_row(out, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "3e-05", "2e-05"]
    # main never ran the pipeline: DVC shows its side as "-"
    assert table_row(out, "metrics/score.json", "loss")[2:4] == ["-", "0.8333"]
    assert table_row(out, "metrics/eval.json", "exact_match_finetuned")[2:4] == ["-", "0.83333"]


@pytest.mark.integration
def test_dvc_metrics_show_lists_the_intervals(project):
    shown = run(DVC + ["metrics", "show", "--md"], project, stdout_only=True)
    header, _, *rows = table_rows(shown)
    eval_row = dict(zip(header, next(r for r in rows if r[0] == "metrics/eval.json")))
    low, high = wilson_interval(40, ROWS)
    assert (eval_row["exact_match_finetuned"], eval_row["exact_match_finetuned_n"]) == ("0.83333", "48")
    assert (float(eval_row["exact_match_finetuned_ci_low"]), float(eval_row["exact_match_finetuned_ci_high"])) == pytest.approx(
        (low, high), abs=1e-5)
    assert {"exact_match_delta_ci_low", "exact_match_delta_p_value", "no_call_accuracy_finetuned_n"} <= set(header)


@pytest.mark.integration
def test_report_unknown_revision_is_one_sentence(project):
    result = make(project, "report", "A=exp-1", "B=no-such-exp", check=False)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'no-such-exp' does not exist" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- the pure parts


PATHS = report.Paths("data/eval/predictions.jsonl", "metrics/eval.json", "metrics/convert.json")


def record(row_id: str, exact: bool, model: str = "finetuned", **extra) -> dict:
    return {"id": row_id, "model": model, "exact": exact, **extra}


def test_render_says_when_nothing_changed():
    empty = "| Path   | Metric   | a   | b   | Change   |\n|--------|----------|-----|-----|----------|\n\n"
    none = report.Side("a", None, None, None), report.Side("b", None, None, None)
    out = report.render(*none, PATHS, empty, "")
    assert "No metric changed." in out and "No param changed." in out and "No exact-match figures on either side yet." in out
    assert "`a` has no `data/eval/predictions.jsonl` (the eval stage has not run there); `b` has no" in out
    assert "|" not in out and "<details>" not in out
    only_other = empty.strip() + "\n| metrics/score.json | loss | 0.5 | 0.8 | 0.3 |\n"
    out = report.render(*none, PATHS, only_other, "")
    assert "| metrics/score.json | loss |" in section(out, "Metrics") and "<details>" not in out


def test_compare_pairs_the_finetuned_records_by_row_and_occurrence():
    a = [record("r1", True), record("r2", False), record("r2", True), record("r3", False), record("r1", False, "base")]
    b = [record("r2", True), record("r1", False), record("r4", True), record("r1", True, "base")]
    c = report.compare(a, b)
    # r1 (A right, B wrong: broken) and the first r2 (A wrong, B right: fixed); A's second r2 and r3, B's r4 unpaired
    assert (c.rows_a, c.rows_b, c.shared) == (4, 3, 2)
    assert (c.exact.fixed, c.exact.broken, c.exact.both, c.exact.neither) == (1, 1, 0, 0)
    assert c.any_order is None  # records from before exact_any_order: that row is left out, not guessed


def test_reorder_puts_headline_rows_and_the_eval_file_first():
    dvc_table = (
        "| Path | Metric | a | b | Change |\n|---|---|---|---|---|\n"
        "| metrics/score.json | loss | 0.5 | 0.8 | 0.3 |\n"
        "| metrics/convert.json | call_agreement_litertlm_app | 0.9 | 1.0 | 0.1 |\n"
        "| metrics/convert.json | exact_match_litertlm_app | 0.5 | 0.6 | 0.1 |\n"
        "| metrics/eval.json | argument_f1_finetuned | 0.5 | 0.6 | 0.1 |\n"
        "| metrics/eval.json | exact_match_any_order_finetuned | 0.5 | 0.6 | 0.1 |\n"
        "| metrics/eval.json | exact_match_delta | 0.5 | 0.6 | 0.1 |\n"
        "| metrics/eval.json | exact_match_finetuned | 0.5 | 0.6 | 0.1 |\n"
        "| metrics/eval.json | exact_match_finetuned_ci_low | 0.4 | 0.5 | 0.1 |\n")
    out = report.reorder_metrics_table(dvc_table, ("metrics/eval.json", "metrics/convert.json"))
    assert [(r[0], r[1]) for r in table_rows(out)[2:]] == [
        ("metrics/eval.json", "exact_match_finetuned"), ("metrics/eval.json", "exact_match_finetuned_ci_low"),
        ("metrics/eval.json", "exact_match_delta"), ("metrics/convert.json", "exact_match_litertlm_app"),
        ("metrics/eval.json", "argument_f1_finetuned"), ("metrics/eval.json", "exact_match_any_order_finetuned"),
        ("metrics/convert.json", "call_agreement_litertlm_app"), ("metrics/score.json", "loss")]
    assert report.reorder_metrics_table("", ()) == ""


def test_headline_shows_the_bundle_and_old_metrics_without_intervals():
    a = report.Side("old", {"exact_match_finetuned": 0.5}, None, [])
    b = report.Side("new", {"exact_match_finetuned": 0.75, "exact_match_finetuned_n": 4,
                            "exact_match_finetuned_ci_low": 0.3, "exact_match_finetuned_ci_high": 0.95,
                            "exact_match_delta": 0.25, "exact_match_delta_ci_low": -0.1, "exact_match_delta_ci_high": 0.5},
                    {"exact_match_litertlm_app": 0.7, "exact_match_litertlm_app_n": 20}, [])
    out = report.headline_section(a, b, PATHS)
    assert table_row(out, "fine-tuned") == ["fine-tuned", "50.0%", "75.0% [30.0, 95.0], n = 4"]
    assert table_row(out, "fine-tuned − base (paired)") == ["fine-tuned − base (paired)", "—", "+25.0 points [-10.0, +50.0]"]
    assert table_row(out, "`.litertlm`, as an app runs it")[1:] == ["—", "70.0%, n = 20"]
    assert "base" not in [r[0] for r in table_rows(out)]


def test_unreadable_predictions_are_named_not_raised():
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        report.parse_predictions('{"id": "a", "exact": true}\n{oops\n')
    with pytest.raises(ValueError, match="line 1 is not a prediction record"):
        report.parse_predictions('{"id": 3, "exact": true}\n')
    side = report.Side("a", None, None, None, problem="line 2 is not JSON (Expecting value)")
    out = report.paired_section(side, report.Side("b", None, None, [record("r", True)]), PATHS)
    assert "No paired comparison: `a`'s `data/eval/predictions.jsonl` cannot be read (line 2 is not JSON" in out


# ---------------------------------------------------------------- the workflow


def workflow_steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["test-and-report"]["steps"]


def step(name_part: str) -> dict:
    (found,) = [s for s in workflow_steps() if name_part in s.get("name", "")]
    return found


def test_workflow_runs_the_tests_on_pull_requests():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    runs = [s.get("run", "").strip() for s in workflow_steps()]
    assert runs.index("make setup") < runs.index("make test")
    assert workflow["permissions"]["pull-requests"] == "write"
    python = [s for s in workflow_steps() if s.get("uses", "").startswith("actions/setup-python")]
    assert python and python[0]["with"]["cache"] == "pip"


def run_step(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    # the shell GitHub runs a `run:` step with on Linux
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1", **env))


@pytest.mark.integration
def test_workflow_report_and_pull_steps_in_a_pr_checkout(project, tmp_path):
    """A clone (origin/main = the base branch) with one PR commit: the steps' own scripts, as the runner runs them."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["git", "config", "user.email", "ci@example.com"], clone)
    run(["git", "config", "user.name", "ci"], clone)
    link_venv(clone)
    set_params(clone / "params.yaml", {"train.lr": 1e-4})
    run(DVC + ["repro"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-q", "-m", "raise the learning rate"], clone)

    # no DVC remote: the pull step says so and succeeds
    pull = step("dvc pull")["run"]
    result = run_step(pull, clone)
    assert result.returncode == 0, result.stderr
    assert "no DVC remote configured" in result.stdout

    # a local-folder remote: the step pulls (nothing is missing here)
    run(DVC + ["remote", "add", "--local", "-d", "store", str(tmp_path / "store")], clone)
    result = run_step(pull, clone)
    assert result.returncode == 0, result.stderr
    assert "no DVC remote configured" not in result.stdout and "::warning::" not in result.stdout, result.stdout

    summary = tmp_path / "summary.md"
    result = run_step(step("diff against the base branch")["run"], clone, BASE_REF="main", GITHUB_STEP_SUMMARY=str(summary))
    assert result.returncode == 0, result.stderr
    comment = (clone / "report.md").read_text()
    assert "`origin/main` → `HEAD`" in comment
    assert table_row(comment, "params.yaml", "train.lr") == ["params.yaml", "train.lr", "3e-05", "0.0001"]
    assert table_row(comment, "metrics/score.json", "loss")[2:4] == ["-", "0.5"]
    # the base branch never evaluated; the PR's commit did (its predictions are in git)
    assert "No paired comparison: `origin/main` has no `data/eval/predictions.jsonl`" in comment
    assert table_row(section(comment, "Headline"), "fine-tuned")[1] == "—"
    assert summary.read_text() == comment
