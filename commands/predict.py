"""predict: run one request through a model and print the function calls it makes.

    python -m commands.predict "Turn on the flashlight"
    python -m commands.predict "Email ana@x.org about lunch" --model models/base --raw
    python -m commands.predict "..." --tools my_tools.json --now 2026-01-16T09:30:00

Reads a model folder (default models/finetuned) and, optionally, a JSON file of
tool declarations (a list of tools, or an object with a "tools" list; wrapped as
{"type": "function", "function": {...}} or bare; xLAM-style parameter maps are
declared as the format stage declared them for training). Without --tools the prompt
declares the seven Mobile Actions functions, as in the data set. The developer
turn carries the current date, time and day of week in the Mobile Actions
wording (--now fixes them). Writes nothing: prints the parsed calls as a JSON
list ([{"name": ..., "arguments": {...}}]) on stdout; --raw first prints the
generated text as it came (special tokens kept). A text answer or unparseable
output is reported on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from pipeline import functiongemma as fg
from pipeline import mobile_actions, row_files, rows
from pipeline.common import UserError, run_main
from pipeline.generate import generate, load_model

log = logging.getLogger("predict")

def developer_message(now: datetime) -> dict[str, str]:
    """The Mobile Actions developer turn for a given moment."""
    return {"role": "developer", "content": mobile_actions.developer_text(now)}


def build_prompt(request: str, tools: list[dict], now: datetime) -> str:
    return fg.render_prompt(tools, [developer_message(now), {"role": "user", "content": request}])


MAX_TOOLS_BYTES = 16 << 20  # a tools file larger than this is refused unread (its prompt would be far past any context)


def read_tools(path: Path) -> list[dict]:
    """Tool declarations from a JSON file; a UserError names what is wrong.

    Read as the format stage reads rows (pipeline/row_files.py, pipeline/rows.py): a UTF-8
    byte-order mark and CRLF are fine; JSON-text tools are decoded; xLAM-style parameter maps
    become the same JSON schemas the model was trained on; anything else gets one sentence.
    """
    try:
        size = path.stat().st_size
        if size > MAX_TOOLS_BYTES:
            raise UserError(f"tools file {path} is {size:,} bytes, over the {MAX_TOOLS_BYTES:,} a tools file may hold")
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"tools file {path} not found: pass a JSON file with a list of tool declarations") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"tools file {path} cannot be read ({err.strerror or err}): pass a JSON file") from None
    value, error = row_files.parse_json_file(data)
    if error:
        if error.startswith("invalid JSON"):
            raise UserError(f"tools file {path} is not valid JSON: {error.removeprefix('invalid JSON ').strip('()')}")
        raise UserError(f"tools file {path} cannot be used: {error}")
    tools = value.get("tools") if isinstance(value, dict) else value
    errors: list[str] = []
    if isinstance(tools, str):
        tools = rows.loads_json(tools)[0]
    if not isinstance(tools, list) or not tools:
        raise UserError(f"tools file {path} must hold a non-empty JSON list of tools (or an object with a 'tools' list)")
    tools = rows.normalize_tools(tools, errors)
    for i, tool in enumerate(tools):
        errors += rows.tool_problems(tool, i)[1]
        if not errors:
            try:
                fg.render_declaration(tool)
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                errors.append(f"tools[{i}]: {err}")
        if errors:
            raise UserError(f"tools file {path}: tool {i} cannot be declared ({'; '.join(errors)})")
    return tools


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now().replace(microsecond=0)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"--now {value!r} is not a date-time: use YYYY-MM-DDTHH:MM:SS") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("request", help="what the user asks, e.g. \"Turn on the flashlight\"")
    parser.add_argument("--model", type=Path, default=Path("models/finetuned"), help="Hugging Face model folder (default: models/finetuned)")
    parser.add_argument("--tools", type=Path, help="JSON file of tool declarations (default: the seven Mobile Actions functions)")
    parser.add_argument("--raw", action="store_true", help="also print the generated text, special tokens kept")
    parser.add_argument("--now", help="date-time for the developer turn, YYYY-MM-DDTHH:MM:SS (default: now)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="generation budget, tokens (default 256)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: the GPU if there is one)")
    args = parser.parse_args(argv)

    if not args.request.strip():
        raise UserError("the request is empty: pass what the user asks, e.g. \"Turn on the flashlight\"")
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1")
    tools = read_tools(args.tools) if args.tools else mobile_actions.TOOLS
    prompt = build_prompt(args.request, tools, parse_now(args.now))
    model, tokenizer = load_model(args.model, device=args.device)
    result = generate(model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens, batch_size=1, progress=False)
    text = result.texts[0]
    parsed = fg.parse_output(text)
    if args.raw:
        print(text)
    print(json.dumps([{"name": c.name, "arguments": c.arguments} for c in parsed.calls], ensure_ascii=False))
    if parsed.malformed:
        log.warning("the output could not be fully parsed (%s); run with --raw to see it", parsed.error)
    if not result.stopped[0]:
        log.warning("generation hit --max-new-tokens (%d) before a stop token", args.max_new_tokens)
    if parsed.text and not parsed.calls:
        log.info("the model answered with text instead of a call: %s", parsed.text)
    sys.stdout.flush()


if __name__ == "__main__":
    run_main(main)
