"""apply: bring an experiment into the workspace, also one that ran only some of the stages.

    make apply EXP=sweep-fp32-detach-lr1e-3
    python -m commands.apply sweep-fp32-detach-lr1e-3

The same as `dvc exp apply NAME` (its params.yaml, dvc.lock, metrics and the outputs it made, from DVC's
cache), except for the outputs of stages the experiment did not run: a sweep's experiments run up to eval
(`dvc exp run ... eval`), so they hold no bundle, and `dvc exp apply` then stops with "Checkout failed for
following targets: models/litertlm" (DVC refuses to check out an output without a hash). Here those
outputs are left out (DVC's own allow_missing) and named, with the command that makes them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from commands.experiments import check_repository
from pipeline.common import DropMessages, UserError, run_main

log = logging.getLogger("apply")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="its name, as `make experiments` lists it")
    args = parser.parse_args(argv)
    root = Path.cwd()
    check_repository(root)
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    # DVC warns "No file hash info found for ...: it won't be created" for each output left out; said below once
    logging.getLogger("dvc_data.index.checkout").addFilter(DropMessages(r"^No file hash info found for "))
    with Repo(str(root)) as repo:
        try:
            repo.experiments.apply(args.experiment, allow_missing=True)
        except DvcException as err:
            raise UserError(f"cannot apply {args.experiment!r}: {err} (see `make experiments`)") from None
        missing = [str(out) for stage in repo.index.stages for out in stage.outs
                   if out.use_cache and out.hash_info.value is None]
    log.info("applied %s to the workspace: its params.yaml, dvc.lock, metrics and outputs", args.experiment)
    if missing:
        log.info("the experiment did not run the stages that make %s: `dvc repro` makes them (`make convert` the "
                 "bundle)", ", ".join(missing))


if __name__ == "__main__":
    run_main(main)
