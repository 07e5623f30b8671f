"""The test tiers, and the rule that keeps the fast one fast (a pytest plugin; tests/conftest.py loads it).

    make test               # fast tier: pure, unit and property tests (-m "not integration and not slow")
    make test-integration   # the pipeline: dvc, make, tiny trainings, exports (-m integration)
    make test-slow          # the real 270M and the benchmarks (-m slow)

A test that runs pipeline work must say so with a marker: `@pytest.mark.integration` (or `slow`). In the
fast tier, an unmarked test that starts `dvc`, `make` or `accelerate` (as a program or as `python -m`), runs a
pipeline stage other than the format preview, trains (transformers' `Trainer.train`) or exports a bundle
(litert-torch) fails at that call, with a message saying which marker to add. So a slow test can't slip
into `make test` unnoticed; tests/test_tiers.py shows the rule catching each kind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

MARKERS = ("integration", "slow")
PROGRAMS = ("dvc", "make", "accelerate")  # pipeline runs, as a program or as `python -m <module>`
QUICK_STAGE_ARGS = ("--preview",)  # `python -m stages.format --preview FILE`: renders rows, loads no model


class PipelineWorkInFastTier(AssertionError):
    """Raised where an unmarked test starts pipeline work."""


def _command_words(args) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return str(os.fsdecode(args)).split()
    return [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]


def pipeline_work(args) -> str | None:
    """What pipeline work a command line starts (e.g. "dvc", "make", "python -m stages.train"), or None."""
    words = _command_words(args)
    if words and Path(words[0]).name in ("bash", "sh") and "-c" in words[:-1]:  # a shell line: each command in it
        parts = re.split(r"&&|\|\||[;|\n]", words[words.index("-c") + 1])
        return next(filter(None, (pipeline_work(part.split()) for part in parts)), None)
    if not words:
        return None
    if Path(words[0]).name in PROGRAMS:
        return Path(words[0]).name
    script = next((w for w in words[1:] if not w.startswith("-")), "")
    if Path(words[0]).name.startswith("python") and Path(script).parent.name == "bench" and script.endswith(".py"):
        return f"python {script}"  # a benchmark or one of its child runs
    if "-m" in words[:-1]:
        module = words[words.index("-m") + 1]
        top = module.split(".")[0]
        if top in PROGRAMS:
            return f"python -m {module}"
        if top == "stages" and not any(a in words for a in QUICK_STAGE_ARGS):
            return f"python -m {module}"
    return None


def _fail(what: str, nodeid: str) -> None:
    raise PipelineWorkInFastTier(
        f"{nodeid} runs {what} without a tier marker: add @pytest.mark.integration (dvc, make, tiny trainings, "
        "exports) or @pytest.mark.slow (the real 270M) so it runs in `make test-integration` / `make test-slow`, "
        "not in the fast `make test` (tests/tiers.py)")


def is_fast(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(m) for m in MARKERS)


def guard(mp: pytest.MonkeyPatch, nodeid: str) -> None:
    """Make pipeline work fail inside this test (see the module docstring)."""
    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *a, **kw):
        what = pipeline_work(args)
        if what:
            _fail(what, nodeid)
        popen_init(self, args, *a, **kw)

    def refuse(what):
        def call(*a, **kw):
            _fail(what, nodeid)
        return call

    mp.setattr(subprocess.Popen, "__init__", guarded_popen)
    import transformers  # TRL's SFTTrainer trains through transformers' Trainer.train

    mp.setattr(transformers.Trainer, "train", refuse("a training (Trainer.train)"))
    convert = sys.modules.get("stages.convert_litertlm")  # imported at the top of the tests that could export
    if convert is not None:
        mp.setattr(convert, "export_bundle", refuse("a bundle export (litert-torch)"))


_guards: dict[str, pytest.MonkeyPatch] = {}


# From before a test's fixtures are set up (a module fixture that trains counts against the first test that
# asks for it) until after they are torn down. Session fixtures built on the way (the tiny model, the
# formatted sample) run no pipeline work.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if is_fast(item):
        _guards[item.nodeid] = mp = pytest.MonkeyPatch()
        guard(mp, item.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem) -> None:
    mp = _guards.pop(item.nodeid, None)
    if mp is not None:
        mp.undo()
