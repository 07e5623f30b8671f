"""`make experiments` (commands/experiments_table.py): the experiments as an 80-column table.

A throwaway git + DVC copy of the project (its real dvc.yaml and params.yaml, so DVC sees the ~100
param columns a real checkout has) stands in for a repository with experiments: HEAD carries a
baseline's metrics files, and each experiment is a commit on top of it with changed params.yaml and
metrics files, filed under DVC's experiment ref (refs/exps/...), as `dvc exp run` leaves one. Nothing
runs the pipeline: the table only reads metrics files, and these are committed directly (seconds).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from commands import experiments_table as table
from pipeline.stats import accuracy_figures
from tests.helpers import DVC, PROJECT_FILES, ROOT, make_project, run, set_params
from tests.test_make import shell
from tests.test_report import link_venv

EVAL, CONVERT, TRAIN = "metrics/eval.json", "metrics/convert.json", "metrics/train.json"
LONG_PATH = "data/team/mobile-actions/2026-12-02/cleaned/mobile_actions_with_extra_functions.jsonl"
LONG_NAME = "sweep-fp32-detach-lr1e-3-warmup0.1-cosine"  # longer than the name column
# experiment -> (params changed, fine-tuned right of 150, app right of 150 or None: no convert metrics, train seconds)
EXPERIMENTS = {
    "exp-lora": ({"train.lr": 1e-3, "train.lora.enabled": True}, 105, 104, 492.0),
    "exp-own-data": ({"data.source": "local", "data.path": LONG_PATH}, 60, None, 300.0),
    LONG_NAME: ({"train.lr": 2e-5, "train.warmup_ratio": 0.1}, 90, 91, 1200.0),
}
BASELINE = (75, 76, 600.0)  # HEAD's fine-tuned right of 150, app right of 150, train seconds


def metrics_files(finetuned: int, app: int | None, seconds: float) -> dict[str, dict | None]:
    """What the eval, convert_litertlm and train stages write, with these figures (None: no file)."""
    hits = lambda k: [i < k for i in range(150)]  # noqa: E731
    evals = {**accuracy_figures("exact_match_finetuned", hits(finetuned)), "rows_finetuned": 150,
             **accuracy_figures("exact_match_base", hits(0)), "rows_base": 150}
    convert = None if app is None else {"rows_checked": 150, **accuracy_figures("exact_match_litertlm_app", hits(app))}
    return {EVAL: evals, CONVERT: convert, TRAIN: {"runtime_seconds": seconds, "steps": 135, "lr": 1e-5}}


def write_metrics(repo: Path, files: dict[str, dict | None]) -> None:
    for path, values in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if values is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(json.dumps(values, indent=2))


def save_experiment(repo: Path, name: str, params: dict, files: dict[str, dict | None]) -> None:
    """A commit on HEAD with these params and metrics files, filed as DVC experiment `name`; the
    workspace back at HEAD afterwards."""
    from dvc.repo.experiments.refs import ExpRefInfo

    set_params(repo / "params.yaml", params)
    write_metrics(repo, files)
    run(["git", "add", "-A", "params.yaml", "metrics"], repo)
    tree = run(["git", "write-tree"], repo, stdout_only=True).strip()
    head = run(["git", "rev-parse", "HEAD"], repo, stdout_only=True).strip()
    commit = run(["git", "commit-tree", tree, "-p", head, "-m", f"experiment {name}"], repo, stdout_only=True).strip()
    run(["git", "update-ref", str(ExpRefInfo(head, name)), commit], repo)
    run(["git", "reset", "-q", "--hard", "HEAD"], repo)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project with its Makefile and this test run's environment as .venv (marked set up, so `make`
    installs nothing): branch `main` with HEAD's metrics committed and the EXPERIMENTS on it, a branch
    `lr-3e-5` (train.lr changed, never run), and the workspace's eval.limit edited."""
    repo = make_project(tmp_path_factory.mktemp("experiments"), {}, files=[*PROJECT_FILES, "Makefile"])
    link_venv(repo)
    write_metrics(repo, metrics_files(*BASELINE))
    run(["git", "add", "metrics"], repo)
    run(["git", "commit", "-q", "-m", "the main pipeline's metrics"], repo)
    run(["git", "branch", "-M", "main"], repo)
    run(["git", "checkout", "-q", "-b", "lr-3e-5"], repo)
    set_params(repo / "params.yaml", {"train.lr": 3e-5})
    run(["git", "commit", "-q", "-am", "a lower learning rate"], repo)
    run(["git", "checkout", "-q", "main"], repo)
    for name, (params, finetuned, app, seconds) in EXPERIMENTS.items():
        save_experiment(repo, name, params, metrics_files(finetuned, app, seconds))
    set_params(repo / "params.yaml", {"eval.limit": 10})
    return repo


def percent(k: int, n: int = 150) -> str:
    """How the table writes k right of n: the share and its Wilson interval, in percent."""
    figures = accuracy_figures("x", [i < k for i in range(n)])
    return f"{100 * figures['x']:.1f} [{100 * figures['x_ci_low']:.1f}, {100 * figures['x_ci_high']:.1f}]"


def columns(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def row_of(out: str, name: str) -> tuple[list[str], list[str]]:
    """The cells of the row named `name` (its figures on the next line when the name has one of its own)
    and the lines of differing params under it."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip() == name or line.strip().startswith(name + "  "))
    cells = columns(lines[i])
    if cells == [name]:  # a name too long for its column: the figures follow
        i += 1
        cells = [name, *columns(lines[i])]
    params = []
    for line in lines[i + 1:]:
        if not line.startswith("    ") or not line.strip():
            break
        params.append(line)
    return cells, params


@pytest.mark.integration
def test_table_fits_80_columns_with_figures_and_only_the_differing_params(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    table.main([])
    out = capsys.readouterr().out

    assert all(len(line) <= 80 for line in out.splitlines()), "\n".join(l for l in out.splitlines() if len(l) > 80)
    assert columns(out.splitlines()[0]) == ["experiment", "exact match [95%]", "n", "app [95%]", "train min"]
    head, head_params = row_of(out, "main")
    assert head == ["main", percent(75), "150", percent(76), "10.0"] and head_params == []
    lora, lora_params = row_of(out, "exp-lora")
    assert lora == ["exp-lora", percent(105), "150", percent(104), "8.2"]
    assert "".join(lora_params).split() == ["train.lr=0.001", "train.lora.enabled=True"]
    own, own_params = row_of(out, "exp-own-data")
    assert own == ["exp-own-data", percent(60), "150", "-", "5.0"]  # no convert metrics: a dash
    items = "".join(own_params).split()
    assert items[0] == "data.source=local" and items[1].startswith("data.path=data/team/mob") and "…" in items[1]
    assert items[1].endswith("functions.jsonl") and len(items) == 2
    long, long_params = row_of(out, LONG_NAME)
    assert long[1:] == [percent(90), "150", percent(91), "20.0"]
    assert "".join(long_params).split() == ["train.lr=2e-05", "train.warmup_ratio=0.1"]
    workspace, workspace_params = row_of(out, "workspace")
    assert workspace[1] == percent(75) and "".join(workspace_params).split() == ["eval.limit=10"]
    # the params every row shares are not listed
    for common in ("train.seed", "model.source", "format.", "convert.", "train.epochs"):
        assert common not in out, common
    assert "lr-3e-5" not in out  # another branch: only with --all
    # the order DVC gives: the workspace, the baseline, its experiments (indented by two)
    table_lines = out.split("\n\n")[0].splitlines()[1:]
    names = [line.split()[0] for line in table_lines if not line.startswith("    ")]
    assert names[:2] == ["workspace", "main"] and set(names[2:]) == set(EXPERIMENTS)
    assert all(line.startswith("  ") for line in table_lines if line.split()[0] in EXPERIMENTS)


@pytest.mark.integration
def test_sort_and_markdown(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    table.main(["--sort", "exact", "--md"])
    out = capsys.readouterr().out

    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| experiment | exact match % [95%] | n | app % [95%] | train min | params that differ |")
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names == ["**workspace**", "**main**", "`exp-lora`", f"`{LONG_NAME}`", "`exp-own-data`"]
    own = [c.strip() for c in rows[-1].strip("|").split("|")]
    assert own[1:5] == [percent(60), "150", "-", "5.0"] and own[5].startswith("`data.source=local`, `data.path=")
    table.main(["--sort", "minutes"])
    out = capsys.readouterr().out
    order = [name for name in ("exp-own-data", "exp-lora", LONG_NAME) if name in out]
    assert sorted(order, key=out.index) == ["exp-own-data", "exp-lora", LONG_NAME]


@pytest.mark.integration
def test_all_lists_every_commit_with_what_differs_from_head(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    table.main(["--all"])
    out = capsys.readouterr().out

    assert all(len(line) <= 80 for line in out.splitlines())
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], project, stdout_only=True).strip()[:7]
    assert row_of(out, first) == ([first, "-", "-", "-", "-"], [])  # no metrics files yet, HEAD's params
    branch, branch_params = row_of(out, "lr-3e-5")
    assert branch[1] == percent(75) and "".join(branch_params).split() == ["train.lr=3e-05"]  # against HEAD
    # the experiments still against their own baseline, main
    assert "".join(row_of(out, "exp-own-data")[1]).split()[0] == "data.source=local"
    assert "".join(row_of(out, "exp-lora")[1]).split() == ["train.lr=0.001", "train.lora.enabled=True"]


@pytest.mark.integration
def test_make_experiments_from_a_plain_shell(project):
    out = shell("make experiments", project, timeout=300)
    assert percent(105) in out and "train.lora.enabled=True" in out
    assert all(len(line) <= 80 for line in out.splitlines())


@pytest.mark.integration
def test_the_raw_dvc_exp_show_command_of_the_docstring_keeps_the_figures_and_the_changed_params(project):
    (command,) = [line.strip() for line in table.__doc__.splitlines() if line.strip().startswith("dvc exp show")]
    out = run(DVC + shlex.split(command)[1:], project, stdout_only=True)
    header = [cell.strip() for cell in out.splitlines()[0].strip("|").split("|")]
    assert header == ["Experiment", "runtime_seconds", "exact_match_finetuned", "exact_match_finetuned_n",
                      "exact_match_finetuned_ci_low", "exact_match_finetuned_ci_high", "exact_match_litertlm_app",
                      "exact_match_litertlm_app_ci_low", "exact_match_litertlm_app_ci_high",
                      "data.source", "data.path", "train.lr", "train.warmup_ratio", "train.lora.enabled", "eval.limit"]
    assert len([line for line in out.splitlines() if line.strip()]) == 2 + 2 + len(EXPERIMENTS)  # header, rule, workspace, main, the experiments


@pytest.mark.integration
def test_outside_a_dvc_project_is_one_sentence(tmp_path):
    result = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "commands.experiments_table"], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "is not a DVC project" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- the pure parts


PATHS = table.MetricsPaths(EVAL, CONVERT, TRAIN)


def record(rev: str, typ: str = "baseline", name: str | None = None, **values) -> dict:
    return {"Experiment": name, "rev": rev, "typ": typ, "Created": None, "parent": None, "State": None,
            "Executor": None, **values}


def test_build_rows_reads_prefixed_columns_and_compares_each_row_with_its_reference():
    records = [  # as with --all: a newer branch's commit before HEAD's
        record("workspace", **{"train.lr": 1e-5, "train.seed": 42.0, "eval.limit": 10.0}),
        record("0ff1ce0", **{"train.lr": 3e-5, "train.seed": 7.0, "eval.limit": 0.0}),
        record("def5678", "branch_base", "exp-2", **{"train.lr": 3e-5, "train.seed": 8.0, "eval.limit": 0.0,
                                                     "runtime_seconds": 90.0}),
        record("main", **{"metrics/eval.json:exact_match_finetuned": 0.5, "exact_match_finetuned_n": 4.0,
                          "train.lr": 1e-5, "train.seed": 42.0, "eval.limit": 0.0}),
        record("abc1234", "branch_base", "exp-1", State="Failed",
               **{"exact_match_finetuned": 0.75, "train.lr": 2e-5, "train.seed": 42.0, "eval.limit": 0.0}),
    ]
    rows = table.build_rows(records, PATHS, head_names=["1234567", "main"])
    assert [(r.name, r.is_experiment) for r in rows] == [
        ("workspace", False), ("0ff1ce0", False), ("exp-2", True), ("main", False), ("exp-1", True)]
    assert [r.changed for r in rows] == [
        {"eval.limit": 10.0},  # the workspace against HEAD
        {"train.lr": 3e-5, "train.seed": 7.0},  # another commit against HEAD
        {"train.seed": 8.0},  # an experiment against its own baseline
        {},
        {"train.lr": 2e-5}]
    assert rows[3].finetuned == table.Accuracy(0.5, None, None, 4)  # `path:key` where two files share the key
    assert rows[2].train_minutes == 1.5 and rows[4].state == "Failed"
    assert table.cells(rows[3])[1:] == ["50.0", "4", "-", "-"]  # no interval in that file: the share alone
    out = table.render_text(rows)
    assert "  exp-1 (failed)  75.0" in out and "\n    train.lr=3e-05  train.seed=7\n" in out


def test_render_text_stays_within_the_width_whatever_the_names_and_values():
    many = {f"train.key_{i}": "x" * (i * 7) for i in range(12)}
    rows = [table.Row("workspace", False),
            table.Row("a" * 90, True, finetuned=table.Accuracy(1.0, 0.976, 1.0, 150),
                      app=table.Accuracy(1.0, 0.8, 1.0, 20), train_minutes=1234.5, changed=many)]
    out = table.render_text(rows)
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "100.0 [97.6, 100.0]" in out and "100.0 [80.0, 100.0] n=20" in out  # the bundle judged fewer rows: its n
    assert "train.key_11=" + "x" * 14 + "…" + "x" * 15 in out  # 77 x's shortened to 30 characters


def test_shorten_and_format_value():
    assert table.shorten("abcdefghij", 5) == "ab…ij" and table.shorten("abc", 5) == "abc"
    assert [table.format_value(v) for v in (0.001, 2e-05, 16.0, -1.0, "True", None, "[a, b]")] == [
        "0.001", "2e-05", "16", "-1", "True", "-", "[a, b]"]


def test_sort_rows_orders_each_baselines_experiments_and_keeps_the_baselines():
    a, b = table.Row("main", False), table.Row("old", False)
    x, y, z = (table.Row(n, True, finetuned=table.Accuracy(r) if r is not None else None, train_minutes=m)
               for n, r, m in (("x", 0.5, 3.0), ("y", None, 1.0), ("z", 0.9, None)))
    assert [r.name for r in table.sort_rows([a, x, y, z, b, y, x], "exact")] == ["main", "z", "x", "y", "old", "x", "y"]
    assert [r.name for r in table.sort_rows([a, x, y, z], "minutes")] == ["main", "y", "x", "z"]
