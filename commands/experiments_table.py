r"""experiments: the DVC experiments as a table a person can read in an 80-column terminal.

    make experiments                  # the workspace, HEAD and HEAD's experiments
    make experiments ALL=1 SORT=exact MD=1
    python -m commands.experiments_table [--all] [--sort exact|app|minutes] [--md]

`dvc exp show` prints every metric and param column (about 200 here), which a terminal shows as a
table of `…`. This prints one row per experiment and per baseline (the workspace, HEAD; with
`--all` every commit, as `dvc exp show -A`): its name, the fine-tuned model's exact match on the
eval rows with its 95% interval and n (the eval stage's metrics file), the `.litertlm` bundle's exact
match as an app calls it with its interval (the convert_litertlm stage's), and the train minutes
(the train stage's `runtime_seconds`). Under each row, indented, the params.yaml keys whose values
differ from its baseline commit (HEAD's for the workspace and for other commits), long values
shortened in the middle; the params every row shares are left out. A dash: that figure is not there
(the stage has not run for that experiment). `--sort` orders each baseline's experiments, best
first (shortest for minutes); `--md` prints a markdown table instead.

Reads everything through DVC's Python API (`dvc.api.exp_show`), the metrics files' paths from
dvc.yaml; writes nothing. The raw-DVC way to a readable table: the same figures and every param that
varies, as markdown (wider than a terminal, but readable rendered, in a pull request or an editor):

    dvc exp show --md --only-changed --drop '^(?!(data|model|format|train|eval|convert)\.)' --keep '^Experiment$|^exact_match_finetuned(_n|_ci_low|_ci_high)?$|^exact_match_litertlm_app(_ci_low|_ci_high)?$|^runtime_seconds$'

(`--only-changed` drops the columns that are the same in every row, `--drop` every column that is
not a params.yaml key, `--keep` protects the name and the figures from both.)
"""

from __future__ import annotations

import argparse
import math
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from commands.experiments import check_repository
from pipeline.common import UserError, run_main
from pipeline.layout import resolve, stage_arguments
from pipeline.params import SECTIONS

WIDTH = 80  # the terminal the text table is made for
VALUE_CHARS = 30  # a param value longer than this is shortened in the middle
DASH = "-"  # a figure that is not there (the stage has not run)
SORT_KEYS = ("exact", "app", "minutes")
LEGEND = ("exact match: the fine-tuned model on the eval rows, % [95% interval], n rows;\n"
          "app: the .litertlm bundle as an app calls it; -: not there (stage not run).")


@dataclass(frozen=True)
class MetricsPaths:
    """The metrics files the table reads, as dvc.yaml's stages pass them (None: dvc.yaml declares none)."""

    eval: str | None
    convert: str | None
    train: str | None


@dataclass(frozen=True)
class Accuracy:
    """One exact-match figure (a share, 0-1) with its Wilson 95% interval and rows, where the file has them."""

    rate: float
    low: float | None = None
    high: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Row:
    """One line of the table: a baseline (the workspace, a commit) or one of its experiments."""

    name: str
    is_experiment: bool
    state: str | None = None  # Queued, Running, Failed: DVC's state of an unfinished experiment
    finetuned: Accuracy | None = None
    app: Accuracy | None = None
    train_minutes: float | None = None
    changed: dict[str, Any] = field(default_factory=dict)  # param -> this row's value, where it differs


# ---------------------------------------------------------------- pure: DVC's records -> rows


def number(record: dict, path: str | None, key: str) -> float | None:
    """A metric of one exp_show record, where it is a number: DVC names the column `key`, or `path:key`
    when two files have that key; a file that is not there gives None (or DVC's "!")."""
    if path is None:
        return None
    value = record.get(f"{path}:{key}", record.get(key))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def accuracy(record: dict, path: str | None, key: str, n_keys: tuple[str, ...]) -> Accuracy | None:
    """`key` with its `_ci_low`, `_ci_high` and the first of `n_keys` the record has."""
    rate = number(record, path, key)
    if rate is None:
        return None
    n = next((n for n in (number(record, path, k) for k in n_keys) if n is not None), None)
    return Accuracy(rate, number(record, path, f"{key}_ci_low"), number(record, path, f"{key}_ci_high"),
                    None if n is None else int(n))


def param_keys(record: dict) -> list[str]:
    """The params.yaml columns of a record: `section.key` (or `params.yaml:section.key`) of a params section."""
    return [k for k in record if k.removeprefix("params.yaml:").split(".", 1)[0] in SECTIONS and "." in k]


def build_rows(records: list[dict], paths: MetricsPaths, head_names: Collection[str] = ()) -> list[Row]:
    """Rows in DVC's order (the workspace, then each baseline commit followed by its experiments), each with
    the params that differ from its reference: its baseline commit for an experiment, HEAD for the
    workspace and for every other commit. HEAD is the baseline whose rev is one of `head_names` (DVC
    names a commit by its branch or tag, else its short sha), else the first one."""
    keys = list(dict.fromkeys(k for r in records for k in param_keys(r)))
    commits = [r for r in records if r.get("typ") == "baseline" and r.get("rev") != "workspace"]
    head = next((r for r in commits if r.get("rev") in head_names), commits[0] if commits else None)
    rows, baseline = [], head
    for record in records:
        is_experiment = record.get("typ") != "baseline"
        if not is_experiment and record.get("rev") != "workspace":
            baseline = record
        reference = baseline if is_experiment else head
        changed = {} if reference is None or reference is record else {
            k: record.get(k) for k in keys if record.get(k) != reference.get(k)}
        seconds = number(record, paths.train, "runtime_seconds")
        rows.append(Row(
            name=str((record.get("Experiment") if is_experiment else None) or record.get("rev") or "?"),
            is_experiment=is_experiment,
            state=record.get("State") or None,
            finetuned=accuracy(record, paths.eval, "exact_match_finetuned",
                               ("rows_finetuned", "exact_match_finetuned_n")),
            app=accuracy(record, paths.convert, "exact_match_litertlm_app", ("exact_match_litertlm_app_n",)),
            train_minutes=None if seconds is None else seconds / 60,
            changed=changed))
    return rows


def sort_rows(rows: list[Row], by: str) -> list[Row]:
    """Each baseline's experiments ordered by `by` (exact, app: highest first; minutes: shortest first), the
    ones without that figure last; the baselines stay where DVC put them."""
    def score(row: Row) -> tuple[bool, float]:
        if by == "minutes":
            value = row.train_minutes
            return value is None, value or 0.0
        figure = row.finetuned if by == "exact" else row.app
        return figure is None, -(figure.rate if figure else 0.0)

    out: list[Row] = []
    group: list[Row] = []
    for row in [*rows, None]:
        if row is None or not row.is_experiment:
            out.extend(sorted(group, key=score))
            group = []
            if row is not None:
                out.append(row)
        else:
            group.append(row)
    return out


# ---------------------------------------------------------------- pure: rows -> text


def shorten(text: str, limit: int = VALUE_CHARS) -> str:
    """`text`, or its start and its end around an ellipsis when longer than `limit` (a path keeps the
    start of its folders and the end of its file name)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def format_value(value: Any) -> str:
    """A param value as `-S` would take it: 0.001, 2e-05, 16 (DVC hands numbers over as floats)."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def format_accuracy(figure: Accuracy | None) -> str:
    """'55.3 [47.3, 63.1]' (percent), '50.0' without an interval, a dash without the figure."""
    if figure is None:
        return DASH
    if figure.low is None or figure.high is None:
        return f"{100 * figure.rate:.1f}"
    return f"{100 * figure.rate:.1f} [{100 * figure.low:.1f}, {100 * figure.high:.1f}]"


def format_app(row: Row) -> str:
    """The bundle's figure; its n as well where it judged a different number of rows than the eval stage."""
    cell = format_accuracy(row.app)
    if row.app and row.app.n and row.finetuned and row.finetuned.n and row.app.n != row.finetuned.n:
        cell += f" n={row.app.n}"
    return cell


def label(row: Row) -> str:
    """The row's name, with DVC's state where the experiment has not finished well: `exp-3 (queued)`."""
    return f"{row.name} ({row.state.lower()})" if row.state and row.state != "Success" else row.name


def cells(row: Row) -> list[str]:
    """experiment, exact match, n, app, train min."""
    n = row.finetuned.n if row.finetuned and row.finetuned.n is not None else None
    return [("  " if row.is_experiment else "") + label(row), format_accuracy(row.finetuned),
            DASH if n is None else str(n), format_app(row),
            DASH if row.train_minutes is None else f"{row.train_minutes:.1f}"]


HEADER = ["experiment", "exact match [95%]", "n", "app [95%]", "train min"]
RIGHT = (False, False, True, False, True)  # right-aligned columns: n, minutes


def changed_items(row: Row) -> list[str]:
    """`key=value` for each param that differs, as `dvc exp run -S` takes it, long values shortened."""
    return [f"{key.removeprefix('params.yaml:')}={shorten(format_value(value))}" for key, value in row.changed.items()]


def render_text(rows: list[Row], width: int = WIDTH) -> str:
    """The table, every line at most `width` characters: a name too long for its column gets a line of its
    own, the figures on the next; the differing params follow each row, indented, wrapped."""
    body = [cells(r) for r in rows]
    figure_widths = [max(len(c[i]) for c in [HEADER, *body]) for i in range(1, len(HEADER))]
    room = width - sum(figure_widths) - 2 * len(figure_widths)  # what the figures leave for the names
    name_width = max([len(HEADER[0])] + [len(c[0]) for c in body if len(c[0]) <= room])

    def line(values: list[str]) -> str:
        parts = [values[0].ljust(name_width)] + [
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values[1:], figure_widths, RIGHT[1:])]
        return "  ".join(parts).rstrip()

    out = [line(HEADER)]
    for row, values in zip(rows, body):
        if len(values[0]) > name_width:
            out.append(shorten(values[0], width))
            values = ["", *values[1:]]
        out.append(line(values))
        items = changed_items(row)
        if items:
            indent = " " * (6 if row.is_experiment else 4)
            out.extend(textwrap.wrap("  ".join(items), width, initial_indent=indent, subsequent_indent=indent,
                                     break_long_words=True, break_on_hyphens=False))
    return "\n".join([*out, "", LEGEND, footer(rows)])


def render_markdown(rows: list[Row]) -> str:
    """The same rows as a markdown table (for a pull request or a notebook), the params in the last column."""
    lines = ["| experiment | exact match % [95%] | n | app % [95%] | train min | params that differ |",
             "|---|---|--:|---|--:|---|"]
    for row, values in zip(rows, (cells(r) for r in rows)):
        name = f"`{label(row)}`" if row.is_experiment else f"**{label(row)}**"
        params = ", ".join(f"`{item}`" for item in changed_items(row))
        lines.append("| " + " | ".join([name, *values[1:], params]) + " |")
    return "\n".join([*lines, "", LEGEND.replace("\n", " "), footer(rows)])


def footer(rows: list[Row]) -> str:
    if not any(r.is_experiment for r in rows):
        return "No experiments yet: `make demo`, `make sweep` or `dvc exp run -S key=value` make some."
    return "Under a row: the params that differ from its baseline commit (or from HEAD)."


# ---------------------------------------------------------------- edge


def metrics_paths(root: Path) -> MetricsPaths:
    """The eval, convert_litertlm and train stages' `--metrics` in dvc.yaml (None where a stage has none)."""
    def flag(stage: str) -> str | None:
        try:
            value = stage_arguments(stage, root).get("--metrics")
            return resolve(value, root) if value else None  # `${...}` filled in from params.yaml, as DVC does
        except UserError:
            return None

    return MetricsPaths(flag("eval"), flag("convert_litertlm"), flag("train"))


def all_commits(root: Path) -> list[str]:
    """Every commit of HEAD, the branches, the tags and the remotes (the commits `dvc exp show -A` shows)."""
    return subprocess.run(["git", "rev-list", "HEAD", "--branches", "--tags", "--remotes"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.split()


def head_names(root: Path) -> list[str]:
    """What DVC may call HEAD's row: its short sha, and the branches and tags that point at it."""
    sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=root, capture_output=True, text=True).stdout.split()
    refs = subprocess.run(["git", "for-each-ref", "--points-at", "HEAD", "--format=%(refname:short)", "refs/heads", "refs/tags"],
                          cwd=root, capture_output=True, text=True).stdout.split()
    return sha + refs


def read_experiments(root: Path, every_commit: bool) -> list[dict]:
    """dvc.api.exp_show's records: one dict per row, metric and param columns flattened."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.exp_show(repo=str(root), revs=all_commits(root) if every_commit else None)
    except DvcException as err:
        raise UserError(f"DVC could not list the experiments ({err}): see `dvc exp show -v`") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every commit of the branches and tags, as `dvc exp show -A`")
    parser.add_argument("--sort", choices=SORT_KEYS, help="order each baseline's experiments: best exact match, "
                        "best app exact match, or shortest training first")
    parser.add_argument("--md", action="store_true", help="a markdown table instead of the 80-column text")
    args = parser.parse_args(argv)
    root = Path.cwd()
    check_repository(root)
    rows = build_rows(read_experiments(root, args.all), metrics_paths(root), head_names(root))
    if args.sort:
        rows = sort_rows(rows, args.sort)
    print(render_markdown(rows) if args.md else render_text(rows))


if __name__ == "__main__":
    run_main(main)
