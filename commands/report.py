"""report: what a change did to the model, as markdown for review (what the pull-request comment shows).

    make report                       # main vs the workspace
    make report A=exp-1 B=exp-2       # two experiments (names from `dvc exp show`)
    python -m commands.report --a main --b workspace

A and B are any git revision (branch, tag, commit, `origin/main`), a DVC experiment name, or
`workspace` (the files as they are on disk). Prints to stdout, in this order:

1. Headline: each side's exact match with its 95% interval (Wilson's) and rows, for the fine-tuned
   model, the base model, their paired difference, and the `.litertlm` bundle as an app runs it (read
   from each side's eval and convert metrics files).
2. Paired comparison: the fine-tuned model's eval predictions of A and B (the eval stage's
   `--predictions` file as each side has it), paired by row id on the rows both evaluated: rows fixed
   (wrong in A, right in B) and broken (right in A, wrong in B), each side's exact match on those rows,
   B - A with Newcombe's paired 95% interval and the exact McNemar p-value (pipeline/stats.py), the same
   for exact match in any order, and one line of verdict on exact match. The verdict rule
   (PairedDifference.verdict): "better" or "worse" only when the interval lies wholly above or below 0
   and p < 0.05; otherwise "within noise at n = N". The section says so plainly when the two sides did
   not evaluate the same rows (the rows in common are compared) and when a side has no predictions yet
   (not evaluated there); the diffs below are printed all the same.
3. `dvc metrics diff --md A B`, its rows reordered: the headline rows first, the eval and convert files
   before the others, and the rows that are not headline folded into a `<details>` block. DVC sorts a
   file's rows by name (so `argument_f1` comes before `exact_match`) and lists the files in an order
   that changes from one run to the next.
4. `dvc params diff --md A B`.

Everything read is git-tracked (metrics files, predictions: `cache: false` outputs) and read through
DVC at each side (`dvc.api.DVCFileSystem`, which knows experiment names), so no DVC cache is needed.
Paths come from dvc.yaml. The pull-request workflow (.github/workflows/pr.yml) posts the same markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common import UserError, run_main
from pipeline.layout import resolve, stage_arguments
from pipeline.stats import PairedDifference, paired_difference

log = logging.getLogger("report")

WORKSPACE = "workspace"  # DVC's name for the files on disk (not a git revision)
MODEL = "finetuned"  # the model whose predictions are paired across the two sides

# The headline keys, in the order they are shown: exact match of each model and of each way the bundle
# runs, then the paired changes, each followed by its rows, interval and p-value.
HEADLINE_SIDES = ("finetuned", "base", "delta", "litertlm_app", "litertlm_app_constrained", "litertlm_raw",
                  "pytorch", "change_litertlm_app", "change_litertlm_app_constrained", "change_litertlm_raw")
FIGURE_SUFFIXES = ("", "_n", "_ci_low", "_ci_high", "_p_value")
# (label, metrics file, key) of the headline table
HEADLINE_ROWS = (
    ("fine-tuned", "eval", "exact_match_finetuned"),
    ("base", "eval", "exact_match_base"),
    ("fine-tuned − base (paired)", "eval", "exact_match_delta"),
    ("`.litertlm`, as an app runs it", "convert", "exact_match_litertlm_app"),
)


@dataclass(frozen=True)
class Paths:
    """Repo-relative paths of what the report reads, from dvc.yaml (None: dvc.yaml declares none)."""

    predictions: str | None
    eval_metrics: str | None
    convert_metrics: str | None


@dataclass(frozen=True)
class Side:
    """One side of the comparison as it stands at its revision (None: the file is not there)."""

    rev: str
    eval_metrics: dict[str, Any] | None
    convert_metrics: dict[str, Any] | None
    predictions: list[dict] | None
    problem: str = ""  # why the predictions cannot be used, when they are there but unreadable


@dataclass(frozen=True)
class Comparison:
    """The fine-tuned model's verdicts of A and B paired by row."""

    rows_a: int
    rows_b: int
    shared: int
    exact: PairedDifference
    any_order: PairedDifference | None  # None when a side's predictions predate exact_any_order


# ---------------------------------------------------------------- pure


def has_rows(table: str) -> bool:
    """True when a markdown table from DVC has at least one data row (DVC prints a bare header when nothing changed)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return len(lines) > 2


def parse_predictions(text: str) -> list[dict]:
    """The records of a predictions file; a line that is not a JSON object raises ValueError naming it."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not isinstance(record.get("exact"), bool):
            raise ValueError(f"line {number} is not a prediction record (a string `id` and a true/false `exact`)")
        records.append(record)
    return records


def rows_of(records: list[dict], model: str = MODEL) -> dict[tuple[str, int], dict]:
    """One model's records keyed by (row id, occurrence): a row the eval data holds twice is paired twice."""
    seen: Counter = Counter()
    keyed = {}
    for record in records:
        if record.get("model") == model:
            keyed[(record["id"], seen[record["id"]])] = record
            seen[record["id"]] += 1
    return keyed


def compare(a: list[dict], b: list[dict]) -> Comparison:
    """Pair the fine-tuned model's records of A and B by row, in A's order."""
    rows_a, rows_b = rows_of(a), rows_of(b)
    shared = [key for key in rows_a if key in rows_b]
    exact = paired_difference([rows_a[k]["exact"] for k in shared], [rows_b[k]["exact"] for k in shared])
    any_order = None
    if all(isinstance(r.get("exact_any_order"), bool) for k in shared for r in (rows_a[k], rows_b[k])):
        any_order = paired_difference([rows_a[k]["exact_any_order"] for k in shared],
                                      [rows_b[k]["exact_any_order"] for k in shared])
    return Comparison(len(rows_a), len(rows_b), len(shared), exact, any_order)


def headline_rank(key: str) -> tuple[int, int] | None:
    """Where a metrics key stands in the headline (None: it is not a headline key)."""
    for i, side in enumerate(HEADLINE_SIDES):
        for j, suffix in enumerate(FIGURE_SUFFIXES):
            if key == f"exact_match_{side}{suffix}":
                return i, j
    return None


def reorder_metrics_table(table: str, first_files: tuple[str | None, ...] = ()) -> str:
    """DVC's `metrics diff --md` table with the headline rows first and then the rest of each file,
    the files in `first_files` order before the others (alphabetical); within that, DVC's own order."""
    lines = table.strip("\n").splitlines()
    if len(lines) < 3 or not all(line.startswith("|") for line in lines):
        return table
    header, rule, body = lines[0], lines[1], lines[2:]
    order = [f for f in first_files if f]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    def key(item: tuple[int, str]) -> tuple:
        index, line = item
        path, metric = (cells(line) + ["", ""])[:2]
        rank = headline_rank(metric)
        return (0 if rank else 1, order.index(path) if path in order else len(order), path, rank or (0, 0), index)

    body = [line for _, line in sorted(enumerate(body), key=key)]
    return "\n".join([header, rule, *body]) + "\n"


def percent(value: float, signed: bool = False) -> str:
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def figure(metrics: dict[str, Any] | None, key: str) -> str:
    """One headline cell: `58.3% [44.3, 71.2], n = 48` (a change in points, signed); "—" when absent."""
    if not metrics or not isinstance(metrics.get(key), (int, float)):
        return "—"
    signed = "_delta" in key or "_change_" in key
    text = f"{percent(metrics[key], signed)} points" if signed else f"{percent(metrics[key])}%"
    low, high, n = (metrics.get(key + s) for s in ("_ci_low", "_ci_high", "_n"))
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f" [{percent(low, signed)}, {percent(high, signed)}]"
    if isinstance(n, int):
        text += f", n = {n}"
    return text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def headline_section(a: Side, b: Side, paths: Paths) -> str:
    files = {"eval": (paths.eval_metrics, a.eval_metrics, b.eval_metrics),
             "convert": (paths.convert_metrics, a.convert_metrics, b.convert_metrics)}
    rows = []
    for label, file, key in HEADLINE_ROWS:
        _, ma, mb = files[file]
        if any(m and key in m for m in (ma, mb)):
            rows.append([label, figure(ma, key), figure(mb, key)])
    notes = [f"`{side.rev}` has no `{paths.eval_metrics}`: the eval stage has not run there."
             for side in (a, b) if paths.eval_metrics and side.eval_metrics is None]
    if not rows:
        body = "No exact-match figures on either side yet."
    else:
        body = markdown_table(["exact match (95% interval, rows)", f"`{a.rev}`", f"`{b.rev}`"], rows)
    return "\n\n".join(["### Headline", body, *notes]) + "\n"


def paired_section(a: Side, b: Side, paths: Paths) -> str:
    title = "### Paired comparison: the fine-tuned model on the eval rows both sides evaluated"
    if paths.predictions is None:
        return f"{title}\n\nNo paired comparison: dvc.yaml's eval stage passes no `--predictions` file.\n"
    missing = [f"`{s.rev}` has no `{paths.predictions}` (the eval stage has not run there)"
               for s in (a, b) if s.predictions is None and not s.problem]
    missing += [f"`{s.rev}`'s `{paths.predictions}` cannot be read ({s.problem})" for s in (a, b) if s.problem]
    missing += [f"`{s.rev}`'s predictions hold no answers of the fine-tuned model" for s in (a, b)
                if s.predictions is not None and not rows_of(s.predictions)]
    if missing:
        return f"{title}\n\nNo paired comparison: {'; '.join(missing)}.\n"
    c = compare(a.predictions, b.predictions)
    if c.shared == 0:
        return (f"{title}\n\nNo paired comparison: the two sides evaluated no row in common "
                f"(`{a.rev}` {c.rows_a} rows, `{b.rev}` {c.rows_b}).\n")
    if c.rows_a == c.rows_b == c.shared:
        rows_line = f"Both sides evaluated the same {c.shared} rows."
    else:
        rows_line = (f"**The two sides did not evaluate the same rows**: `{a.rev}` evaluated {c.rows_a}, `{b.rev}` "
                     f"{c.rows_b}; the {c.shared} rows both evaluated are compared ({c.rows_a - c.shared} only in "
                     f"`{a.rev}`, {c.rows_b - c.shared} only in `{b.rev}`).")

    def row(name: str, d: PairedDifference) -> list[str]:
        return [name, str(d.n), str(d.fixed), str(d.broken), f"{percent(d.accuracy_a)}%", f"{percent(d.accuracy_b)}%",
                f"{percent(d.difference, True)} points", f"[{percent(d.ci_low, True)}, {percent(d.ci_high, True)}]",
                f"{d.p_value:.3g}"]

    table = markdown_table(["metric", "rows", "fixed", "broken", f"`{a.rev}`", f"`{b.rev}`", "difference",
                            "95% interval", "McNemar p"],
                           [row("exact match", c.exact)] + ([row("exact match, any order", c.any_order)] if c.any_order else []))
    legend = (f"fixed: wrong in `{a.rev}`, right in `{b.rev}`; broken: the other way. The interval is Newcombe's "
              "for paired proportions; the verdict says \"better\" or \"worse\" only when it excludes 0 and p < 0.05.")
    return "\n\n".join([title, rows_line, table, f"**Verdict (exact match):** {c.exact.verdict()}", legend]) + "\n"


def split_headline(table: str) -> tuple[str, str]:
    """A reordered metrics table as (its headline rows, the other rows), each with the header; "" when none."""
    lines = table.strip("\n").splitlines()
    if not has_rows(table):
        return "", ""
    header, body = lines[:2], lines[2:]

    def is_headline(line: str) -> bool:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        return len(cells) > 1 and headline_rank(cells[1]) is not None

    first = [line for line in body if is_headline(line)]
    rest = [line for line in body if not is_headline(line)]
    return ("\n".join(header + first) if first else ""), ("\n".join(header + rest) if rest else "")


def render(a: Side, b: Side, paths: Paths, metrics_md: str, params_md: str) -> str:
    """The review comment: headline, paired comparison, metrics diff (the headline rows in view, the
    others folded away when there are both), params diff."""
    headline, rest = split_headline(reorder_metrics_table(metrics_md, (paths.eval_metrics, paths.convert_metrics)))
    if headline and rest:
        count = len(rest.splitlines()) - 2
        metrics_body = f"{headline}\n\n<details><summary>{count} more changed metrics</summary>\n\n{rest}\n\n</details>"
    else:
        metrics_body = headline or rest or "No metric changed."
    params_body = params_md.strip() if has_rows(params_md) else "No param changed."
    return "\n".join([
        f"## DVC report: `{a.rev}` → `{b.rev}`\n",
        headline_section(a, b, paths),
        paired_section(a, b, paths),
        f"### Metrics (`dvc metrics diff`)\n\n{metrics_body}\n",
        f"### Params (`dvc params diff`)\n\n{params_body}\n",
    ])


# ---------------------------------------------------------------- edge


def check_revision(root: Path, rev: str) -> None:
    """Fail with one sentence unless `rev` names a commit, branch, tag or experiment (or the workspace)."""
    if rev == WORKSPACE:
        return
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import RevError, resolve_rev

    try:
        with Repo(str(root)) as repo:
            if repo.scm.no_commits:
                raise UserError(f"{root} has no git commit yet: commit the project before comparing revisions")
            resolve_rev(repo.scm, rev)
    except NotDvcRepoError:
        raise UserError(f"{root} is not a DVC project: run `make report` from the repository root") from None
    except RevError:
        raise UserError(f"revision {rev!r} does not exist: name a branch, tag, commit or experiment "
                        "(`git branch -a`, `dvc exp show`), or `workspace`") from None


def project_paths(root: Path) -> Paths:
    """What the report reads, as dvc.yaml's eval and convert_litertlm stages pass it (None where they do not)."""
    def flag(stage: str, name: str) -> str | None:
        try:
            value = stage_arguments(stage, root).get(name)
            return resolve(value, root) if value else None  # `${...}` filled in from params.yaml, as DVC does
        except UserError:
            return None

    return Paths(flag("eval", "--predictions"), flag("eval", "--metrics"), flag("convert_litertlm", "--metrics"))


def read_side(root: Path, rev: str, paths: Paths) -> Side:
    """The side's metrics and predictions: from disk for the workspace, else through DVC at `rev`."""
    from dvc.exceptions import DvcException

    if rev == WORKSPACE:
        def read(path: str) -> str:
            return (root / path).read_text(encoding="utf-8")
    else:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(root), rev=rev)

        def read(path: str) -> str:
            return fs.read_text(path, encoding="utf-8")

    def text(path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return read(path)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def metrics(path: str | None) -> dict[str, Any] | None:
        try:
            raw = text(path)
            data = json.loads(raw) if raw is not None else None
        except (json.JSONDecodeError, DvcException) as err:
            log.warning("%s at %s cannot be read (%s): the headline leaves it out", path, rev, err)
            return None
        return data if isinstance(data, dict) else None

    predictions, problem = None, ""
    try:
        raw = text(paths.predictions)
        predictions = parse_predictions(raw) if raw is not None else None
    except ValueError as err:
        problem = str(err)
    except DvcException as err:
        problem = str(err).rstrip(".")
    return Side(rev, metrics(paths.eval_metrics), metrics(paths.convert_metrics), predictions, problem)


def dvc_diff(root: Path, what: str, a: str, b: str) -> str:
    """`dvc metrics|params diff --md A B`, run with this interpreter's DVC; its markdown on success."""
    cmd = [sys.executable, "-m", "dvc", what, "diff", "--md", a, b]
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"`dvc {what} diff {a} {b}` failed: {errors[-1] if errors else f'exit code {result.returncode}'}")
    for line in result.stderr.splitlines():  # DVC's warnings, e.g. a revision that has no metrics file yet
        if line.strip():
            log.warning("dvc %s diff: %s", what, line.strip())
    return result.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="main", help="the old side: revision or experiment (default: main)")
    parser.add_argument("--b", default=WORKSPACE, help="the new side: revision, experiment or `workspace` (default)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project root (default: here)")
    args = parser.parse_args(argv)

    for rev in (args.a, args.b):
        check_revision(args.repo, rev)
    paths = project_paths(args.repo)
    a, b = (read_side(args.repo, rev, paths) for rev in (args.a, args.b))
    metrics_md = dvc_diff(args.repo, "metrics", args.a, args.b)
    params_md = dvc_diff(args.repo, "params", args.a, args.b)
    sys.stdout.write(render(a, b, paths, metrics_md, params_md))


if __name__ == "__main__":
    run_main(main)
