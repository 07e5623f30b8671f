"""Shared fixtures: a tiny random Gemma 3 base model with the real tokenizer, and
the committed sample formatted into prompt/completion examples.

Both are built once per test session (about 25 s, mostly converting the
tokenizer out of the offline GGUF). Set PIPELINE_TEST_CACHE=/some/dir to keep
them between sessions while developing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
FIXTURES = ROOT.parent / "shared" / "fixtures"


def _cache_dir(tmp_path_factory, name: str) -> Path:
    cache = os.environ.get("PIPELINE_TEST_CACHE")
    if cache:
        return Path(cache) / name
    return tmp_path_factory.mktemp(name)


def _tiny_params():
    from pipeline.params import load_params

    model = load_params("model", path=ROOT / "params.yaml")
    return type(model)(source="tiny", hub_repo=model.hub_repo, revision=model.revision, path="", tiny=model.tiny)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """models/base/ as `model.source: tiny` writes it (random 2-layer Gemma 3)."""
    from stages.fetch import fetch_model

    folder = _cache_dir(tmp_path_factory, "base-tiny")
    if not (folder / "source.json").exists():
        fetch_model(_tiny_params(), folder)
    return folder


@pytest.fixture(scope="session")
def formatted_sample(tmp_path_factory, tiny_base) -> Path:
    """data/formatted/ for the committed sample (train.jsonl, eval.jsonl)."""
    from stages import format as format_stage

    folder = _cache_dir(tmp_path_factory, "formatted")
    if not (folder / "eval.jsonl").exists():
        metrics = folder / "format.json"
        format_stage.main(["--params", str(ROOT / "params.yaml"), "--raw", str(SAMPLE), "--tokenizer", str(tiny_base),
                           "--out-dir", str(folder), "--metrics", str(metrics)])
    return folder


@pytest.fixture
def tiny_model_copy(tiny_base, tmp_path) -> Path:
    """A writable copy of the tiny base (for tests that modify or train it)."""
    dest = tmp_path / "model"
    shutil.copytree(tiny_base, dest)
    return dest
