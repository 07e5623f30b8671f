"""`make help`: every target of the Makefile listed with its `##` description; a bare `make` prints it.

A target added without a `target: deps  ## what it does` comment fails here, so the list stays whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

RULE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)\s*:(?![:=])")  # `name: deps` (not `NAME := value`, not a file)


def makefile_targets(text: str) -> set[str]:
    """The targets a user can name: every rule's, and every name in a .PHONY line."""
    targets = set()
    for line in text.splitlines():
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
        elif match := RULE.match(line):
            targets.add(match.group(1))
    return targets


def make(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_makefile_targets_reads_rules_and_phony_lines():
    text = ".PHONY: a b\nVAR := x\nPY ?= y\nexport PATH := z\n$(VENV)/.installed: f\na: b  ## x\nc:\n\techo d:\n"
    assert makefile_targets(text) == {"a", "b", "c"}


@pytest.mark.integration  # starts make (a second at most)
def test_help_lists_every_target_with_a_description():
    out = make("help")
    described = {}
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            described[name] = text.strip()
    targets = makefile_targets((ROOT / "Makefile").read_text())
    assert {"setup", "help", "experiments", "clean-venv"} <= targets
    missing = sorted(t for t in targets if not described.get(t))
    assert not missing, f"add a `## description` to these Makefile targets: {missing}"
    assert set(described) == targets
    assert all(len(line) <= 80 and line == line.rstrip() for line in out.splitlines()), out


@pytest.mark.integration  # starts make, dry runs only
def test_a_bare_make_is_help(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")  # a dry run of a copy: nothing here could install
    assert make("--dry-run", cwd=tmp_path) == make("--dry-run", "help", cwd=tmp_path)
    assert "awk" in make("--dry-run", cwd=tmp_path)
