"""Shared fixtures: a tiny random Gemma 3 base model with the real tokenizer, the
committed sample formatted into prompt/completion examples, and the golden
conformance rows (FORMAT.md: the exact text the real FunctionGemma chat template
rendered for them).

Both are built once per test session (about 25 s, mostly converting the
tokenizer out of the offline GGUF). Set PIPELINE_TEST_CACHE=/some/dir to keep
them between sessions while developing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
# The golden conformance fixtures come with the team's shared material (../shared/fixtures beside the
# repository, as CI has it); a clone from GitHub has no ../shared, and the tests that need them skip.
FIXTURES = ROOT.parent / "shared" / "fixtures"
GOLDEN_ROWS = FIXTURES / "functiongemma_golden_rows.jsonl"
GOLDEN_EXPECTED = FIXTURES / "functiongemma_golden_expected.json"
GOLDEN_IDS = ["one_call", "two_calls", "openai_shape"]
NO_GOLDEN = (f"the golden conformance fixtures are not here ({FIXTURES}): they come from the project's shared "
             "folder (../shared/fixtures beside the repository, present in CI), not from the repository itself")


def _golden_cases() -> list[tuple[dict, dict]]:
    rows = [json.loads(line) for line in GOLDEN_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(zip(rows, json.loads(GOLDEN_EXPECTED.read_text(encoding="utf-8"))))


def pytest_generate_tests(metafunc):
    """A test taking `golden_case` runs once per golden (row, {prompt, completion}) pair, or skips without them."""
    if "golden_case" in metafunc.fixturenames:
        if GOLDEN_ROWS.exists() and GOLDEN_EXPECTED.exists():
            metafunc.parametrize("golden_case", _golden_cases(), ids=GOLDEN_IDS)
        else:
            metafunc.parametrize("golden_case", [pytest.param(None, marks=pytest.mark.skip(reason=NO_GOLDEN))])


@pytest.fixture(scope="session")
def golden_rows() -> list[dict]:
    """The golden rows (Mobile Actions schema and the OpenAI-style shape)."""
    if not GOLDEN_ROWS.exists():
        pytest.skip(NO_GOLDEN)
    return [row for row, _ in _golden_cases()]


@pytest.fixture(scope="session")
def golden_expected() -> list[dict]:
    """{prompt, completion} the real chat template rendered for each golden row."""
    if not GOLDEN_EXPECTED.exists():
        pytest.skip(NO_GOLDEN)
    return [expected for _, expected in _golden_cases()]


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
def tiny_tokenizer(tiny_base):
    """The tiny base's tokenizer: Gemma 3's 262k vocabulary with FunctionGemma's tokens at ids 46-52."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


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
