"""sweep: tune train.* on a validation slice of the train split, as DVC experiments in DVC's own queue.

    make sweep                                   # the grid that chose the demo's recipe (bench/sweep_demo.yaml)
    make sweep GRID=my_grid.yaml                 # your own grid, for your own data
    python -m commands.sweep --grid bench/sweep_demo.yaml [--only lr-2e-3,r32] [--dry-run]

A grid file (YAML) has `base:`, `-S` overrides every experiment gets (for the demo: the offline
sources, `format.validation_rows`, `eval.split: validation`, no base-model eval), and `experiments:`,
one named set of overrides each. Every experiment's params are validated first (a wrong key stops
the sweep before anything runs); then each is queued with `dvc exp run --queue -n sweep-<name>
-S ... eval` (the pipeline up to eval: fetch and format come from DVC's run-cache after the first),
`dvc queue start` runs them one at a time (two trainings on two cores would only slow each other),
each experiment's line (validation exact match with n, train minutes) is printed as soon as it
finishes (`dvc queue logs -f sweep-<name>` follows the running one's log), and when the queue is empty
the table: experiment, the overrides that differ, exact match on the validation rows with n and its
95% interval, and train minutes. The validation rows are train rows the format stage held out
(format.validation_rows), never the held-out eval split, so choosing a recipe by them leaves the eval
figures honest. `make experiments` lists the experiments afterwards; `make apply EXP=sweep-<name>` brings
one into the workspace (plain `dvc exp apply` stops on the bundle such an experiment did not make).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from commands.experiments import check_overrides, check_repository, dvc, environment, experiment_rev, read_at, set_args
from pipeline.common import UserError, run_main
from pipeline.layout import stage_path
from pipeline.stats import describe_accuracy

log = logging.getLogger("sweep")

PREFIX = "sweep-"
POLL_SECONDS = 20
WAIT_LINE_SECONDS = 300  # while nothing changes in the queue, a "still waiting" line every 5 minutes


def read_grid(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(base overrides, {name: overrides}) of a grid file; values kept as the text `-S` would get."""
    from ruamel.yaml import YAML, YAMLError

    if not path.is_file():
        raise UserError(f"grid file {path} not found: see bench/sweep_demo.yaml for the shape (base: ..., experiments: ...)")
    try:
        grid = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        raise UserError(f"grid file {path} is not valid YAML: {err}") from None
    experiments = grid.get("experiments")
    if not isinstance(grid, dict) or not isinstance(experiments, dict) or not experiments:
        raise UserError(f"grid file {path} needs `experiments:`, a mapping of names to -S overrides")

    def as_text(values: Any, where: str) -> dict[str, str]:
        if not isinstance(values, dict):
            raise UserError(f"grid file {path}: {where} must be a mapping of param keys to values")
        return {str(k): text(v) for k, v in values.items()}

    return as_text(grid.get("base") or {}, "base"), {str(n): as_text(v or {}, n) for n, v in experiments.items()}


def text(value: Any) -> str:
    """A YAML value as `-S key=value` writes it (lists as flow sequences, booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(text, value)) + "]"
    return str(value)


def queue_status(root: Path) -> str:
    return subprocess.run(dvc("queue", "status"), cwd=root, env=environment(), capture_output=True, text=True).stdout


def task_lines(status: str, names: list[str]) -> list[tuple[str, str]]:
    """(name, status) of each task of ours in `dvc queue status` (columns: task, name, created, status)."""
    ours = {PREFIX + n: n for n in names}
    return [(ours[fields[1]], fields[-1]) for fields in map(str.split, status.splitlines())
            if len(fields) > 2 and fields[1] in ours]


def wait_for_queue(root: Path, names: list[str], on_finished: Callable[[str], None] = lambda name: None) -> None:
    """Until no experiment of ours is queued or running in `dvc queue status`; `on_finished(name)` once for each
    as soon as it is neither (done or failed)."""
    started = time.perf_counter()
    finished: set[str] = set()
    said, said_at = None, 0.0
    while True:
        status = queue_status(root)
        tasks = task_lines(status, names)
        pending = [(name, state) for name, state in tasks if state in ("Queued", "Running")]
        for name in names:
            if name not in finished and all(n != name for n, _ in pending):
                finished.add(name)
                on_finished(name)
        if pending and not any(state == "Running" for _, state in pending) and "Worker status: 0 active, 0 idle" in status:
            # DVC's worker can stop with tasks still queued (seen after a `dvc queue remove` of another task):
            # without a new one the sweep would wait forever.
            log.warning("no DVC queue worker is running while %d experiment(s) wait: starting one (dvc queue start -j 1)",
                        len(pending))
            subprocess.run(dvc("queue", "start", "-j", "1"), cwd=root, env=environment(), check=True)
        if not pending:
            failed = sorted({PREFIX + name for name, state in tasks if state == "Failed"})
            if failed:
                log.warning("failed experiments (see `dvc queue logs NAME`): %s", ", ".join(failed))
            return
        running = [PREFIX + name for name, state in pending if state == "Running"]
        now = time.perf_counter()
        if (len(pending), running) != said or now - said_at >= WAIT_LINE_SECONDS:  # not one line every poll for hours
            log.info("%d of %d experiments still queued or running (%.0f min so far)%s", len(pending), len(names),
                     (now - started) / 60, f"; follow {running[0]} with `dvc queue logs -f {running[0]}`" if running else "")
            said, said_at = (len(pending), running), now
        time.sleep(POLL_SECONDS)


def result_row(root: Path, name: str, metrics_path: str, train_path: str) -> dict[str, Any]:
    try:
        rev = experiment_rev(root, PREFIX + name)
    except UserError:
        return {"name": name, "failed": True}
    evals, train = read_at(root, rev, metrics_path), read_at(root, rev, train_path)
    return {"name": name, "failed": not evals, "exact": evals.get("exact_match_finetuned"),
            "n": evals.get("rows_finetuned", evals.get("exact_match_finetuned_n")),
            "train_minutes": (train.get("runtime_seconds") or 0) / 60, "steps": train.get("steps")}


def finished_line(r: dict) -> str:
    """One experiment's figure, printed as soon as it finishes."""
    if r["failed"]:
        return f"{PREFIX}{r['name']}: no result (failed: see `dvc queue logs {PREFIX}{r['name']}`)"
    return (f"{PREFIX}{r['name']}: validation exact match {describe_accuracy(r['exact'], r['n'])}, "
            f"{r['train_minutes']:.1f} train minutes")


def table(results: list[dict], experiments: dict[str, dict[str, str]]) -> str:
    """Markdown, best validation exact match first."""
    varying = sorted({k for o in experiments.values() for k in o})
    lines = ["| experiment | " + " | ".join(varying) + " | validation exact match | train minutes |",
             "|---|" + "---|" * len(varying) + "---|---|"]
    done = sorted((r for r in results if not r["failed"]), key=lambda r: -(r["exact"] or 0))
    for r in done + [r for r in results if r["failed"]]:
        cells = [experiments[r["name"]].get(k, "") for k in varying]
        if r["failed"]:
            score, minutes = "no result (failed, or not run yet: see `dvc queue status`)", "-"
        else:
            score, minutes = describe_accuracy(r["exact"], r["n"]), f"{r['train_minutes']:.1f}"
        lines.append(f"| {PREFIX}{r['name']} | " + " | ".join(cells) + f" | {score} | {minutes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, required=True, help="YAML file: base overrides and named experiments")
    parser.add_argument("--only", help="comma-separated experiment names of the grid to run")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the dvc commands; run nothing")
    parser.add_argument("--collect", action="store_true", help="only print the table of experiments already run")
    args = parser.parse_args(argv)
    root = Path.cwd()
    check_repository(root)
    base, experiments = read_grid(args.grid)
    if args.only:
        chosen = [n for n in args.only.split(",") if n]
        unknown = sorted(set(chosen) - set(experiments))
        if unknown:
            raise UserError(f"--only: the grid has no {unknown}; it has {', '.join(experiments)}")
        experiments = {n: experiments[n] for n in chosen}
    for name, overrides in experiments.items():
        check_overrides(root, {**base, **overrides})
    metrics_path = str(stage_path("eval", "--metrics"))
    train_path = str(stage_path("train", "--metrics"))

    if not args.collect:
        for name, overrides in experiments.items():
            cmd = dvc("exp", "run", "--queue", "-n", PREFIX + name, *set_args({**base, **overrides}), "eval")
            print("$ dvc " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
            if not args.dry_run:
                subprocess.run(cmd, cwd=root, env=environment(), check=True, capture_output=True, text=True)
        if args.dry_run:
            return
        print("$ dvc queue start -j 1", file=sys.stderr, flush=True)
        subprocess.run(dvc("queue", "start", "-j", "1"), cwd=root, env=environment(), check=True)
        wait_for_queue(root, list(experiments), lambda name: print(
            finished_line(result_row(root, name, metrics_path, train_path)), flush=True))
    print(table([result_row(root, n, metrics_path, train_path) for n in experiments], experiments))


if __name__ == "__main__":
    run_main(main)
