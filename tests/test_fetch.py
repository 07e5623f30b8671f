"""fetch stage: every source, the hub faked at the huggingface_hub call, errors users hit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from stages import fetch
from pipeline import functiongemma as fg
from pipeline import row_files
from pipeline.common import UserError
from pipeline.params import ParamsError, load_params, parse_section, read_yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "mobile_actions_sample.jsonl"
SHA = "0123456789abcdef0123456789abcdef01234567"
SECRET = "hf_FAKEtokenThatMustNeverBeWritten123"


def data_params(**overrides):
    return parse_section("data", dict(read_yaml(ROOT / "params.yaml")["data"], **overrides))


def model_params(**overrides):
    return parse_section("model", dict(read_yaml(ROOT / "params.yaml")["model"], **overrides))


def all_text_under(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- tiny / offline model


def test_tiny_base_is_a_plain_functiongemma_folder(tiny_base):
    names = {p.name for p in tiny_base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json", "source.json"} <= names
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    for token_id, name in fg.FUNCTION_TOKENS.items():
        assert tok.convert_ids_to_tokens(token_id) == name
        assert tok(name, add_special_tokens=False)["input_ids"] == [token_id]  # never split
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.config.num_hidden_layers == 2
    assert model.generation_config.eos_token_id == [1, 106, 50]


def test_attached_chat_template_renders_the_golden_rows_as_the_real_one_did(tiny_tokenizer, golden_case):
    row, expected = golden_case
    prompt = tiny_tokenizer.apply_chat_template(row["messages"][:-1], tools=row["tools"], tokenize=False,
                                                add_generation_prompt=True)
    assert prompt == expected["prompt"]


def test_renaming_is_idempotent_and_refuses_non_gemma_tokenizers(tiny_model_copy):
    before = (tiny_model_copy / "tokenizer.json").read_text()
    fetch.make_functiongemma_tokenizer_files(tiny_model_copy)
    assert json.loads((tiny_model_copy / "tokenizer.json").read_text()) == json.loads(before)
    tok = json.loads(before)
    vocab = tok["model"]["vocab"]
    del vocab["<start_function_call>"]
    vocab["hello"] = 48
    (tiny_model_copy / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UserError, match="not a Gemma 3 tokenizer"):
        fetch.make_functiongemma_tokenizer_files(tiny_model_copy)


@pytest.mark.slow
def test_offline_gguf_base_model(tmp_path):
    """The real offline Gemma 3 270M: de-quantized, saved, loadable, FunctionGemma tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = fetch.fetch_model(model_params(source="gguf"), tmp_path / "base")
    assert record["source"] == "gguf"
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert "quantization_config" not in config and config["vocab_size"] == 262144
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    ids = tok("<bos>The capital of France is", add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    assert torch.isfinite(logits).all()
    assert "Paris" in tok.decode(logits.argmax().item()) or "Paris" in tok.decode(logits.topk(5).indices)


# ---------------------------------------------------------------- rows


def test_sample_rows_are_copied_byte_for_byte(tmp_path):
    record = fetch.fetch_rows(data_params(source="sample"), tmp_path / "raw")
    assert (tmp_path / "raw" / "dataset.jsonl").read_bytes() == SAMPLE.read_bytes()
    assert record["rows"] == sum(1 for line in SAMPLE.read_text().splitlines() if line.strip())
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["sha256"] == record["sha256"]


def test_local_folder_of_every_file_type_maps_lines_back(mixed_folder, tmp_path):
    record = fetch.fetch_rows(data_params(source="local", path=str(mixed_folder["folder"])), tmp_path / "raw")
    lines = (tmp_path / "raw" / "dataset.jsonl").read_bytes().splitlines()
    assert record["rows"] == len(lines) == mixed_folder["rows"]
    saved = json.loads((tmp_path / "raw" / "source.json").read_text())
    assert [Path(s["file"]).name for s in saved["segments"]] == [
        f"{shape}.{ext}" for shape in ("mobile_actions", "openai", "xlam") for ext in ("json", "jsonl", "parquet")]
    assert saved["files"] == [s["file"] for s in saved["segments"]]  # plain paths, as the model card reads them
    where = {row_files.locate(saved["segments"], n)[0] for n in range(1, len(lines) + 1)}
    assert mixed_folder["rejected_where"] in where and f"{mixed_folder['folder']}/openai.jsonl line 3" in where


def test_local_json_list_and_folder(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:3]]
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(rows[:2]))
    (folder / "b.jsonl").write_text(json.dumps(rows[2]))  # no trailing newline
    fetch.fetch_rows(data_params(source="local", path=str(folder)), tmp_path / "raw")
    written = [json.loads(line) for line in (tmp_path / "raw" / "dataset.jsonl").read_text().splitlines()]
    assert written == rows
    (tmp_path / "single.json").write_text(json.dumps({"rows": rows}))
    fetch.fetch_rows(data_params(source="local", path=str(tmp_path / "single.json")), tmp_path / "raw2")
    assert len((tmp_path / "raw2" / "dataset.jsonl").read_text().splitlines()) == 3


def test_local_errors_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        fetch.fetch_rows(data_params(source="local", path=str(tmp_path / "missing.jsonl")), tmp_path / "raw")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jsonl, .json or .parquet files"):
        fetch.fetch_rows(data_params(source="local", path=str(tmp_path / "empty")), tmp_path / "raw")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="invalid JSON at line 1"):
        fetch.fetch_rows(data_params(source="local", path=str(tmp_path / "bad.json")), tmp_path / "raw")
    with pytest.raises(ParamsError, match="data.hub_split_files: give both train and eval"):
        data_params(hub_split_files={"train": "a.jsonl", "eval": ""})
    with pytest.raises(ParamsError, match="data.hub_file: 'rows.csv' must be a .jsonl, .json or .parquet file"):
        data_params(hub_file="rows.csv")


# ---------------------------------------------------------------- hub, faked at the huggingface_hub call


def fake_snapshot(tmp_path: Path, name: str, source: Path) -> Path:
    """A folder shaped like a hub cache snapshot: .../snapshots/<sha>/..."""
    snap = tmp_path / "hub-cache" / name / "snapshots" / SHA
    if source.is_dir():
        shutil.copytree(source, snap)
    else:
        snap.mkdir(parents=True)
        shutil.copy(source, snap / "dataset.jsonl")
    return snap


def test_hub_rows_and_model(tmp_path, monkeypatch, tiny_base):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    calls = []

    def fake_file(repo_id, filename, *, repo_type=None, revision=None, **kw):
        calls.append(("file", repo_id, filename, repo_type, revision))
        return str(fake_snapshot(tmp_path, "data", SAMPLE) / filename)

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kw):
        calls.append(("model", repo_id, revision))
        assert "*.safetensors" in allow_patterns
        return str(fake_snapshot(tmp_path, "model", tiny_base))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)

    raw, base = tmp_path / "raw", tmp_path / "base"
    fetch.fetch_rows(data_params(source="hub", revision="v1.0"), raw)
    fetch.fetch_model(model_params(source="hub", revision="abc"), base)
    assert calls == [("file", "google/mobile-actions", "dataset.jsonl", "dataset", "v1.0"),
                     ("model", "google/functiongemma-270m-it", "abc")]
    assert json.loads((raw / "source.json").read_text())["resolved_revision"] == SHA
    assert json.loads((base / "source.json").read_text())["resolved_revision"] == SHA
    assert (base / "model.safetensors").exists()
    assert SECRET not in all_text_under(raw) + all_text_under(base)


def test_hub_glob_and_files_per_split(tmp_path, monkeypatch, own_rows, row_writer):
    """data.hub_file as a glob, and data.hub_split_files, faked at huggingface_hub's own functions."""
    snap = tmp_path / "hub-cache" / "data" / "snapshots" / SHA
    row_writer(snap / "data" / "train-00000.parquet", own_rows["xlam"][:3])
    row_writer(snap / "data" / "train-00001.parquet", own_rows["xlam"][3:])
    row_writer(snap / "data" / "test-00000.jsonl", own_rows["openai"][:2])
    (snap / "README.md").write_text("# card")
    calls = []

    def fake_list(repo_id, *, repo_type=None, revision=None, **kw):
        calls.append(("list", repo_id, repo_type, revision))
        return [str(p.relative_to(snap)) for p in sorted(snap.rglob("*")) if p.is_file()]

    def fake_file(repo_id, filename, *, repo_type=None, revision=None, **kw):
        calls.append(("file", filename, repo_type, revision))
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake_list)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    record = fetch.fetch_rows(data_params(source="hub", hub_repo="someone/xlam-copy", hub_file="data/train-*.parquet",
                                          revision="v2"), tmp_path / "raw")
    assert calls == [("list", "someone/xlam-copy", "dataset", "v2"),
                     ("file", "data/train-00000.parquet", "dataset", "v2"), ("file", "data/train-00001.parquet", "dataset", "v2")]
    assert record["rows"] == 6 and record["resolved_revision"] == SHA
    assert [s["file"] for s in record["segments"]] == ["hf://datasets/someone/xlam-copy/data/train-00000.parquet",
                                                       "hf://datasets/someone/xlam-copy/data/train-00001.parquet"]
    rows = [json.loads(line) for line in (tmp_path / "raw" / "dataset.jsonl").read_text().splitlines()]
    assert rows[0]["query"] == own_rows["xlam"][0]["query"] and isinstance(rows[0]["tools"], str)  # as stored

    calls.clear()
    split_files = {"train": "data/train-*.parquet", "eval": "data/test-00000.jsonl"}
    record = fetch.fetch_rows(data_params(source="hub", hub_split_files=split_files), tmp_path / "raw2")
    assert [(s["lines"], s["split"]) for s in record["segments"]] == [(3, "train"), (3, "train"), (2, "eval")]
    assert [c[0] for c in calls] == ["list", "file", "file", "file"]

    with pytest.raises(UserError, match=r"no .jsonl/.json/.parquet file in google/mobile-actions at main matches 'nope/\*'"):
        fetch.fetch_rows(data_params(source="hub", hub_file="nope/*"), tmp_path / "raw3")


def test_hub_listing_errors_become_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)

    def boom(*a, **k):
        raise hf_errors.RevisionNotFoundError("rev", response=_response(404))

    monkeypatch.setattr(huggingface_hub, "list_repo_files", boom)
    with pytest.raises(UserError, match="check data.revision"):
        fetch.fetch_rows(data_params(source="hub", hub_file="*.parquet"), tmp_path / "raw")


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status_code=status, request=httpx2.Request("GET", "https://huggingface.co/x"))


@pytest.mark.parametrize(
    "error, token, expected",
    [
        (hf_errors.GatedRepoError("gated", response=_response(403)), SECRET, "accept its licence"),
        (hf_errors.RepositoryNotFoundError("nf", response=_response(401)), None, "needs a Hugging Face token"),
        (hf_errors.RepositoryNotFoundError("nf", response=_response(404)), SECRET, "not found or your token cannot see it"),
        (hf_errors.RevisionNotFoundError("rev", response=_response(404)), SECRET, "check data.revision"),
        (hf_errors.HfHubHTTPError("401", response=_response(401)), SECRET, "token was refused"),
        (hf_errors.HfHubHTTPError("403", response=_response(403)), SECRET, "forbidden"),
        (hf_errors.LocalEntryNotFoundError("offline"), SECRET, "cannot reach the Hugging Face Hub"),
        (hf_errors.EntryNotFoundError("no file"), SECRET, "has no such file"),
    ],
)
def test_hub_errors_become_one_sentence(tmp_path, monkeypatch, error, token, expected):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    with pytest.raises(UserError, match=expected) as err:
        fetch.fetch_rows(data_params(source="hub"), tmp_path / "raw")
    assert "\n" not in str(err.value) and SECRET not in str(err.value)


def test_hub_model_without_token_stops_before_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)

    def never(*a, **k):
        raise AssertionError("no download without a token")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", never)
    with pytest.raises(UserError, match="export HF_TOKEN"):
        fetch.fetch_model(model_params(source="hub"), tmp_path / "base")


@pytest.mark.integration
def test_cli_bad_param_is_one_line_and_exit_2(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("source: hub             # hub (Hugging Face",
                                                                 "source: hubb            # hub (Hugging Face"))
    result = subprocess.run([sys.executable, "-m", "stages.fetch", "--params", str(params), "--raw-dir",
                             str(tmp_path / "raw"), "--model-dir", str(tmp_path / "base")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "data.source" in lines[0]
    assert not (tmp_path / "raw").exists()
