"""`make push` (commands/push.py): files, model card and errors, with the hub faked at huggingface_hub's HfApi.

The project is a real git + DVC repo whose dvc.yaml stands in for the pipeline's (the same stage names and
path flags, commands that do nothing), its train stage run with `dvc repro` so dvc.lock records its params:
push reads them, and whether the stage is still up to date, through DVC.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from commands import push
from pipeline.common import UserError, write_json
from pipeline.layout import stage_path
from tests.helpers import DVC, init_repo, run, set_params

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_FAKEpushTokenThatMustNeverBeWritten42"
REPO = "someone/functiongemma-mobile"
BASE_SHA = "0123456789abcdef0123456789abcdef01234567"
DATA_SHA = "89abcdef0123456789abcdef0123456789abcdef"
MODEL_FILES = {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
               "tokenizer.json", "tokenizer_config.json"}
EVAL = {"exact_match_base": 0.0, "exact_match_finetuned": 0.85, "exact_match_delta": 0.85,
        "function_name_accuracy_base": 0.12, "function_name_accuracy_finetuned": 0.95,
        "argument_f1_base": 0.05, "argument_f1_finetuned": 0.9125, "rows": 20, "run_device": "cpu"}
# dvc.yaml's stages as push reads them: names and path flags as the real ones, commands that do nothing
STAND_IN_DVC_YAML = """\
stages:
  fetch:
    cmd: python -c pass --raw-dir data/raw --model-dir models/base
  train:
    cmd: python -c pass --out-dir models/finetuned --metrics metrics/train.json
    params: [train, format.max_length]
  eval:
    cmd: python -c pass --metrics metrics/eval.json
  convert_litertlm:
    cmd: python -c pass --out-dir models/litertlm --metrics metrics/convert.json
"""


class FakeHub:
    """Records what push asks of HfApi; reads every uploaded payload the way the real client would."""

    def __init__(self, monkeypatch, fail: Exception | None = None):
        self.repos: list[dict] = []
        self.commits: list[dict] = []
        self.fail = fail
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", self.create_commit)

    def create_repo(self, repo_id, **kwargs):  # bound to FakeHub, so HfApi's self is not passed
        if self.fail is not None:
            raise self.fail
        self.repos.append({"repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        payloads = {}
        for op in operations:
            with op.as_file() as f:
                payloads[op.path_in_repo] = f.read()
        self.commits.append({"repo_id": repo_id, "payloads": payloads, **kwargs})
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="m",
                                          commit_description="", oid="abc")


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    """git + DVC with the stand-in dvc.yaml, the train stage run (`dvc repro train`) at lr 2e-4 with LoRA."""
    repo = tmp_path_factory.mktemp("push") / "project"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    set_params(repo / "params.yaml", {"train.lr": 2e-4, "train.max_steps": 60, "train.lora.enabled": True})
    (repo / "dvc.yaml").write_text(STAND_IN_DVC_YAML)
    init_repo(repo)
    run(DVC + ["repro", "train"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "trained"], repo)
    return repo


@pytest.fixture
def workspace(tmp_path, trained_project, monkeypatch) -> Path:
    """A finished run: records, metrics, dvc.lock and a .litertlm; models/finetuned is the tiny base (read only)."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    tmp_path = tmp_path / "project"
    shutil.copytree(trained_project, tmp_path)
    (tmp_path / "models" / "base").mkdir(parents=True)
    write_json(tmp_path / "models/base/source.json", {"source": "hub", "repo": "google/functiongemma-270m-it",
                                                      "revision": "main", "resolved_revision": BASE_SHA})
    write_json(tmp_path / "data/raw/source.json", {"source": "hub", "repo": "google/mobile-actions", "file": "dataset.jsonl",
                                                   "revision": "main", "resolved_revision": DATA_SHA, "rows": 9654,
                                                   "sha256": "f" * 64})
    write_json(tmp_path / "metrics/eval.json", EVAL)
    write_json(tmp_path / "metrics/train.json", {"steps": 60, "train_loss": 0.13, "lora": True, "device": "cpu"})
    write_json(tmp_path / "metrics/convert.json", {"quantize": "dynamic_int8", "file_size_mb": 285.1, "agreement": 1.0})
    (tmp_path / "models/litertlm").mkdir(parents=True)
    (tmp_path / "models/litertlm/functiongemma-finetuned.litertlm").write_bytes(b"LITERTLM" * 100)
    return tmp_path


def push_args(ws: Path, tiny_base: Path, *extra: str) -> list[str]:
    return ["--repo", REPO, "--repo-dir", str(ws), "--model-dir", str(tiny_base), *extra]


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file, but DVC's own scratch (.dvc/tmp: its locks and state database)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in sorted(folder.rglob("*"))
            if ".dvc/tmp" not in p.as_posix()}


@pytest.mark.integration
def test_push_uploads_model_tokenizer_litertlm_and_card(workspace, tiny_base, monkeypatch):
    hub = FakeHub(monkeypatch)
    before = snapshot(workspace, tiny_base)
    push.main(push_args(workspace, tiny_base, "--private"))

    assert hub.repos == [{"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}]
    (commit,) = hub.commits
    assert commit["repo_id"] == REPO
    assert set(commit["payloads"]) == MODEL_FILES | {"functiongemma-finetuned.litertlm", "README.md"}  # no source.json
    assert commit["payloads"]["model.safetensors"] == (tiny_base / "model.safetensors").read_bytes()

    card = commit["payloads"]["README.md"].decode()
    # the front matter, as the hub reads it
    meta = huggingface_hub.ModelCard(card).data
    assert (meta.base_model, meta.datasets, meta.license, meta.library_name) == (
        "google/functiongemma-270m-it", ["google/mobile-actions"], "gemma", "transformers")
    assert meta.tags == ["function-calling", "functiongemma", "dvc", "litert-lm"]
    assert BASE_SHA in card and DATA_SHA in card and "9654 rows" in card
    # the params that trained it: the train stage's, read through DVC (it is up to date with dvc.lock)
    assert "with the train stage up to date with `dvc.lock`" in card
    assert "| `train.lr` | 0.0002 |" in card and "| `train.lora.enabled` | true |" in card
    assert "| `train.max_steps` | 60 |" in card and "| `format.max_length` | 997 |" in card
    # the eval table: base vs fine-tuned, headline metrics first, delta computed where eval.json has none
    assert "| metric | base | fine-tuned | change |" in card
    assert "| **exact_match** | 0 | 0.85 | +0.85 |" in card
    assert "| **function_name_accuracy** | 0.12 | 0.95 | +0.83 |" in card
    assert "| **argument_f1** | 0.05 | 0.9125 | +0.8625 |" in card
    assert card.index("**exact_match**") < card.index("**function_name_accuracy**") < card.index("**argument_f1**")
    assert "| `file_size_mb` | 285.1 |" in card and "litert-lm" in card
    assert "| `functiongemma-finetuned.litertlm` | 800 B |" in card

    # the token is in nothing uploaded, nothing written, and push wrote nothing locally
    assert all(SECRET.encode() not in data for data in commit["payloads"].values())
    assert snapshot(workspace, tiny_base) == before
    assert all(SECRET.encode() not in p.read_bytes() for p in workspace.rglob("*") if p.is_file())


@pytest.mark.integration
def test_push_can_leave_out_the_litertlm(workspace, tiny_base, monkeypatch):
    hub = FakeHub(monkeypatch)
    push.main(push_args(workspace, tiny_base, "--no-include-litertlm"))

    assert hub.repos[0]["private"] is None  # an existing repo keeps its visibility
    payloads = hub.commits[0]["payloads"]
    assert set(payloads) == MODEL_FILES | {"README.md"}
    card = payloads["README.md"].decode()
    assert "litert-lm" not in card and huggingface_hub.ModelCard(card).data.tags == ["function-calling", "functiongemma", "dvc"]


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.integration
def test_params_edited_since_training_stop_the_push(workspace, tiny_base, monkeypatch, dry_run):
    """params.yaml moved on after `dvc repro train`: the card would name params that did not train the model."""
    hub = FakeHub(monkeypatch)
    set_params(workspace / "params.yaml", {"train.lr": 1e-5})
    with pytest.raises(UserError) as err:
        push.main(push_args(workspace, tiny_base, *(["--dry-run"] if dry_run else [])))
    assert str(err.value).startswith("the train stage is not up to date with dvc.lock "
                                     "(changed deps: params.yaml (train modified)), so the card would not describe")
    assert "run `dvc repro train`" in str(err.value) and hub.repos == [] and hub.commits == []


@pytest.mark.integration
def test_a_train_stage_that_never_ran_stops_the_push(workspace, tiny_base, monkeypatch):
    hub = FakeHub(monkeypatch)
    (workspace / "dvc.lock").unlink()
    with pytest.raises(UserError, match="the train stage is not up to date with dvc.lock"):
        push.main(push_args(workspace, tiny_base))
    assert hub.repos == []


def test_push_outside_a_dvc_project_is_one_sentence(tmp_path):
    (tmp_path / "dvc.yaml").write_text(STAND_IN_DVC_YAML)
    with pytest.raises(UserError, match="is not a DVC project: run push from the repository root"):
        push.read_train_params(tmp_path)


def test_push_takes_its_paths_from_the_real_dvc_yaml():
    # every flag push reads names an output of the real pipeline
    paths = {(stage, flag): stage_path(stage, flag, ROOT) for stage, flag in [
        ("train", "--out-dir"), ("fetch", "--model-dir"), ("fetch", "--raw-dir"), ("convert_litertlm", "--out-dir"),
        ("eval", "--metrics"), ("train", "--metrics"), ("convert_litertlm", "--metrics")]}
    assert paths[("train", "--out-dir")] == ROOT / "models/finetuned"
    assert paths[("eval", "--metrics")] == ROOT / "metrics/eval.json"


def test_the_eval_table_shows_intervals_rows_and_p_values():
    section = push.eval_section({
        "exact_match_finetuned": 0.85, "exact_match_finetuned_n": 20, "exact_match_finetuned_ci_low": 0.6396,
        "exact_match_finetuned_ci_high": 0.9476, "exact_match_base": 0.0, "exact_match_base_n": 20,
        "exact_match_base_ci_low": 0.0, "exact_match_base_ci_high": 0.1611, "exact_match_delta": 0.85,
        "exact_match_delta_n": 20, "exact_match_delta_ci_low": 0.6, "exact_match_delta_ci_high": 0.95,
        "exact_match_delta_p_value": 3.05e-05, "argument_f1_finetuned": 0.9, "argument_f1_base": 0.1})
    assert "| **exact_match** | 0 [0, 0.1611] | 0.85 [0.6396, 0.9476] | +0.85 [+0.6, +0.95], p = 3.05e-05 |" in section
    assert "| **argument_f1** | 0.1 | 0.9 | +0.8 |" in section  # no interval: none claimed
    assert "Rows: fine-tuned 20, base 20, both (the change) 20." in section
    assert "exact_match_finetuned_n" not in section  # the figures sit in the cells, not in a table of leftovers


@pytest.mark.parametrize("error, expected", [
    (hf_errors.HfHubHTTPError("401", response=httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co"))),
     "token was refused"),
    (hf_errors.HfHubHTTPError("403", response=httpx2.Response(403, request=httpx2.Request("POST", "https://huggingface.co"))),
     "cannot write to https://huggingface.co/someone/functiongemma-mobile: use a token with write access to someone"),
    (hf_errors.RepositoryNotFoundError("404", response=httpx2.Response(404, request=httpx2.Request("POST", "https://huggingface.co"))),
     "cannot write to"),
    (httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"), "cannot reach the Hugging Face Hub"),
])
@pytest.mark.integration
def test_hub_errors_become_one_sentence(workspace, tiny_base, monkeypatch, error, expected):
    hub = FakeHub(monkeypatch, fail=error)
    with pytest.raises(UserError, match=expected) as err:
        push.main(push_args(workspace, tiny_base))
    assert "\n" not in str(err.value) and SECRET not in str(err.value)
    assert hub.commits == []


@pytest.mark.integration
def test_no_token_stops_before_any_hub_call(workspace, tiny_base, monkeypatch):
    hub = FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserError, match="needs a Hugging Face token with write access: export HF_TOKEN"):
        push.main(push_args(workspace, tiny_base))
    assert hub.repos == [] and hub.commits == []


@pytest.mark.integration
def test_a_file_holding_the_token_is_never_uploaded(workspace, tiny_base, monkeypatch, tmp_path):
    hub = FakeHub(monkeypatch)
    leaky = tmp_path / "leaky-model"
    shutil.copytree(tiny_base, leaky)
    (leaky / "config.json").write_text(json.dumps({"note": f"token {SECRET}"}))
    with pytest.raises(UserError, match="config.json contains your Hugging Face token") as err:
        push.main(push_args(workspace, leaky))
    assert SECRET not in str(err.value) and hub.repos == [] and hub.commits == []


@pytest.mark.parametrize("args, setup, expected", [
    (["--include-litertlm"], lambda ws: shutil.rmtree(ws / "models/litertlm"), "run `make convert` first"),
    ([], lambda ws: (ws / "models/base/source.json").unlink(), "run `dvc repro fetch`"),
])
@pytest.mark.integration
def test_missing_inputs_are_one_sentence(workspace, tiny_base, monkeypatch, args, setup, expected):
    hub = FakeHub(monkeypatch)
    setup(workspace)
    with pytest.raises(UserError, match=expected):
        push.main(push_args(workspace, tiny_base, *args))
    assert hub.repos == []


@pytest.mark.integration
def test_incomplete_model_folder_and_bad_repo_id(workspace, tmp_path, tiny_base):
    empty = tmp_path / "finetuned"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no safetensors weights and no tokenizer"):
        push.model_files(empty)
    with pytest.raises(UserError, match="does not exist: train a model first"):
        push.model_files(tmp_path / "nowhere")
    for bad in ("no-owner", "a/b/c", "bad name/x"):
        with pytest.raises(UserError, match="use user/name"):
            push.check_repo_id(bad)


@pytest.mark.integration
def test_dry_run_prints_the_card_and_needs_no_token(workspace, tiny_base, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    push.main(push_args(workspace, tiny_base, "--dry-run"))
    out = capsys.readouterr().out
    assert out.startswith("---\n") and "| **exact_match** | 0 | 0.85 | +0.85 |" in out
    assert hub.repos == [] and hub.commits == []


def test_eval_table_renders_whatever_flat_keys_it_gets():
    compared, other, record = push.split_eval({
        "foo_base": 1, "foo_finetuned": 3, "bar_delta": 0.5, "count": 7, "nested": {"x_base": 0.25}, "run_seed": 42})
    assert compared == {"foo": {"base": 1, "finetuned": 3}, "nested.x": {"base": 0.25}}
    assert other == {"bar_delta": 0.5, "count": 7} and record == {"run_seed": 42}
    compared, other, _ = push.split_eval({"foo_finetuned": 0.5, "foo_finetuned_ci_low": 0.2, "foo_delta_p_value": 0.5,
                                          "foo_base_n": 4, "lone_ci_low": 1})
    assert compared == {"foo": {"finetuned": 0.5, "finetuned_ci_low": 0.2, "delta_p_value": 0.5, "base_n": 4}}
    assert other == {"lone_ci_low": 1}
    section = push.eval_section({"foo_base": 1, "foo_finetuned": 3, "pass_rate_finetuned": 0.5})
    assert "| foo | 1 | 3 | +2 |" in section and "| pass_rate | — | 0.5 | — |" in section
    assert "Not evaluated" in push.eval_section({})


@pytest.mark.integration
def test_make_push_without_repo_is_one_clear_error():
    # -n: even if the check were broken, make would only print what it would run
    result = subprocess.run(["make", "-n", "--no-print-directory", "push"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "name the Hugging Face repo to push to: make push REPO=user/name" in result.stderr
    assert "pip install" not in result.stdout and "commands.push" not in result.stdout  # stops before `make setup`
