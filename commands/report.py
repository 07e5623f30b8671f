"""report: what a change did to the metrics and params, as markdown for review.

    make report                       # main vs the workspace
    make report A=exp-1 B=exp-2       # two experiments (names from `dvc exp show`)
    python -m commands.report --a main --b workspace

Prints to stdout `dvc metrics diff --md A B` and `dvc params diff --md A B`
under one heading each (only what changed, as DVC shows it). A and B are any
git revision (branch, tag, commit, `origin/main`), a DVC experiment name, or
`workspace` (the files as they are now). Reads only git-tracked files
(`metrics/*.json`, `params.yaml`), so it needs no DVC cache. The pull-request
workflow (.github/workflows/pr.yml) posts the same markdown as a comment.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.common import UserError, run_main

log = logging.getLogger("report")

WORKSPACE = "workspace"  # DVC's name for the files on disk (not a git revision)


# ---------------------------------------------------------------- pure


def has_rows(table: str) -> bool:
    """True when a markdown table from DVC has at least one data row (DVC prints a bare header when nothing changed)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return len(lines) > 2


def render(a: str, b: str, metrics_md: str, params_md: str) -> str:
    """The review comment: one section for metrics, one for params."""
    def section(title: str, table: str, noun: str) -> str:
        body = table.strip() if has_rows(table) else f"No {noun} changed."
        return f"### {title}\n\n{body}\n"

    return "\n".join([
        f"## DVC report: `{a}` → `{b}`\n",
        section("Metrics", metrics_md, "metric"),
        section("Params", params_md, "param"),
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
    metrics_md = dvc_diff(args.repo, "metrics", args.a, args.b)
    params_md = dvc_diff(args.repo, "params", args.a, args.b)
    sys.stdout.write(render(args.a, args.b, metrics_md, params_md))


if __name__ == "__main__":
    run_main(main)
