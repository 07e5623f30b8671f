"""Small shared helpers for the stage modules: errors users can cause, logging,
JSON/JSONL I/O at the edge, and the record of what made a run.

Nothing here knows about a particular stage; the stages import it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger("pipeline")


class UserError(Exception):
    """A problem the user can fix (bad param, bad row, missing token...).

    The message is one sentence that says what to do; `run_main` prints it
    without a traceback and exits non-zero.
    """


class DropMessages(logging.Filter):
    """A logger filter that drops the records whose message matches one of the patterns (re.search)."""

    def __init__(self, *patterns: str) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(p.search(record.getMessage()) for p in self.patterns)


class BelowWarning(logging.Filter):
    """Drops records under WARNING; on the root logger it sees only what is logged on the root itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


# Known harmless warnings that torch and torchao log when a stage imports them (the root logger's basicConfig
# handler would print torchao's in our format). Each is dropped by its logger and message, so any other
# warning of these libraries still shows.
QUIET_MESSAGES: dict[str, DropMessages] = {
    # torchao (imported by transformers' quantizer registry; the pipeline never quantizes with it): its
    # optional prebuilt kernels for another Python (_C_mxfp8.cpython-310) or a GPU architecture (_C_cutlass_90a)
    # fail to load, and torchao goes on without them.
    "torchao": DropMessages(r"^Failed to load \S*/torchao/_C\w*\.\S*so: "),
    # torchao: a CPU torch has no Triton, so torchao's Triton int8 matmul kernels are off (we don't call them).
    "torchao.kernel.intmm": DropMessages(r"Detected no triton"),
    # torch (printed in torch's own W-format): torchao 0.18 registers its enums (KernelPreference,
    # ScaleCalculationMode) as pytree constants, which torch 2.13 deprecates; torchao's to change, not ours.
    "torch.utils._pytree": DropMessages(r"is an Enum subclass and is now natively supported by torch\.compile"),
}
# Libraries whose INFO/DEBUG chatter goes (their warnings stay), unless the user sets the library's own
# verbosity variable, which then decides. datasets logs "JAX version ... available." (INFO) and
# "PyTorch version ... available." (DEBUG) while it imports, before it applies DATASETS_VERBOSITY itself;
# jax logs "Unable to initialize backend 'tpu'" (INFO) when the converter lowers ops through it on a CPU.
QUIET_LIBRARIES = {"datasets": "DATASETS_VERBOSITY", "jax": "JAX_LOGGING_LEVEL"}
# litert-torch ("Use JAX lowering: aten.mm", one per op) and ai-edge-quantizer ("Serializing model...")
# call logging.info() on the root logger; our loggers all have names, so this filter never sees our lines.
ROOT_BELOW_WARNING = BelowWarning()
# warnings.warn() calls of libraries, by (category, message start, module that warns): our own calls use the
# current names, these come from inside other libraries.
QUIET_WARNINGS = [
    # peft 0.21 (wrapping the model for LoRA) and trl read transformers 5's deprecated alias of
    # `is_activation_checkpointing`: the value is right, the name is theirs to update.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", r"transformers\.modeling_utils"),
]


def quiet_libraries() -> None:
    """Silence the known third-party noise above; install before torch & co. are imported (run_main does).

    Filters live on the libraries' loggers, which survive the handlers torch's logging sets up on import.
    """
    for name, quiet in QUIET_MESSAGES.items():
        logging.getLogger(name).addFilter(quiet)  # the same object each time: added once
    for name, env_var in QUIET_LIBRARIES.items():
        if not os.environ.get(env_var):
            logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger().addFilter(ROOT_BELOW_WARNING)
    for category, message, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def setup_logging(verbose: bool = False) -> None:
    """Progress to stderr through `logging`, one format for every stage; known library noise dropped."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    quiet_libraries()


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a stage's main(); a UserError becomes one clear line and exit code 2."""
    setup_logging(os.environ.get("PIPELINE_VERBOSE") == "1")
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict | None, str]]:
    """Yield (line_number, parsed_object_or_None, error) for each non-blank line.

    Bad JSON is reported, not raised, so a caller can list every bad line at once.
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, None, f"invalid JSON ({err.msg} at column {err.colno})"
                continue
            if not isinstance(obj, dict):
                yield number, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield number, obj, ""


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (UTF-8, no ASCII escaping); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: Any) -> None:
    """Write a metrics/record file: sorted keys, stable layout, trailing newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (model weights are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_files(*paths: str | Path) -> dict[str, str]:
    """sha256 of every file under the given files/folders, keyed by path (sorted within each folder)."""
    digests = {}
    for root in map(Path, paths):
        for path in sorted([root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())):
            digests[str(path)] = sha256_file(path)
    return digests


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones say so)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_record(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """What made this run: seed, library versions, device, host (flat keys)."""
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    if seed is not None:
        record["seed"] = seed
    for name, version in package_versions("torch", "transformers", "trl", "peft", "datasets", "huggingface-hub").items():
        record[f"version_{name.replace('-', '_')}"] = version
    try:
        import torch

        record["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        record["device"] = "unknown"
    record.update(extra)
    return record
