"""The formatted examples the format stage writes, read back by train, eval and convert, one way.

    from pipeline.examples import read_examples, select_rows
    rows = read_examples(Path("data/formatted/eval.jsonl"))   # every row checked; bad lines named at once
    rows = select_rows(rows, 48)                             # the rule for "N rows of a split", everywhere

A formatted example is one JSON object per line (written by stages/format.py):
`prompt` (FunctionGemma text up to the model turn), `completion` (the trained tokens),
`tools` and `messages` (the row's tool declarations and the messages before the answer:
what an app passes to the phone runtime), `target_calls` ([{name, arguments}]), `split`,
`user`, `function_names` and `line` (the row's line in the raw data). Reading adds
`_line` (the line in the formatted file) and `id` (a digest of the prompt and target
calls: the same example has the same id in every run and revision).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.common import UserError, read_jsonl

SHOWN_ERRORS = 10


def example_problem(row: dict) -> str:
    """Why a parsed line is not a formatted example ("" when it is one)."""
    if not isinstance(row.get("prompt"), str) or not row["prompt"]:
        return "no 'prompt' string"
    if not isinstance(row.get("completion"), str):
        return "no 'completion' string"
    calls = row.get("target_calls")
    if not isinstance(calls, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict) for c in calls
    ):
        return "'target_calls' must be a list of {name, arguments}"
    if not isinstance(row.get("tools", []), list) or not isinstance(row.get("messages", []), list):
        return "'tools' and 'messages' must be lists"
    return ""


def example_id(row: dict) -> str:
    """A stable id of one example: its prompt and its target calls (16 hex digits of sha256)."""
    blob = json.dumps([row["prompt"], row["target_calls"]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def check_examples(numbered: list[tuple[int, dict | None, str]], path: Path) -> list[dict]:
    """The examples of one formatted file, each with `_line` and `id`; every bad line named in one UserError."""
    rows, errors = [], []
    for line, row, error in numbered:
        if row is not None:
            error = example_problem(row)
        if error:
            errors.append(f"line {line}: {error}")
        else:
            rows.append({**row, "_line": line, "id": example_id(row)})
    if errors:
        shown = "; ".join(errors[:SHOWN_ERRORS]) + (f"; and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else "")
        raise UserError(f"{path} has {len(errors)} bad rows ({shown}): rebuild it with `dvc repro format`")
    return rows


def read_examples(path: Path, *, allow_empty: bool = False) -> list[dict]:
    """Every example of a formatted split file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: run `dvc repro format` first")
    rows = check_examples(list(read_jsonl(path)), path)
    if not rows and not allow_empty:
        raise UserError(f"{path} holds no rows: check that split of your data (rows with that split in `metadata`)")
    return rows


def select_rows(rows: list[Any], limit: int) -> list[Any]:
    """All rows (limit 0), or `limit` rows evenly spaced over them, in order: the same rows on every run.

    The one rule for "N rows of a split" (eval.limit, train.eval_rows, convert.limit): a prefix would
    favour whatever the file happens to start with.
    """
    if limit <= 0 or limit >= len(rows):
        return list(rows)
    return [rows[i * len(rows) // limit] for i in range(limit)]
