"""predict: run one request through a model and print the function calls it makes.

    python -m commands.predict "Turn on the flashlight"
    python -m commands.predict "Email ana@x.org about lunch" --model models/base --raw
    python -m commands.predict "..." --tools my_tools.json --now 2026-01-16T09:30:00

Reads a model folder (default models/finetuned) and, optionally, a JSON file of
tool declarations (a list of tools, or an object with a "tools" list; wrapped as
{"type": "function", "function": {...}} or bare). Without --tools the prompt
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
from typing import Any

from pipeline import functiongemma as fg
from pipeline.common import UserError, run_main
from pipeline.generate import generate, load_model

log = logging.getLogger("predict")

# The seven Mobile Actions functions, declared exactly as the data set's rows declare them.
MOBILE_ACTIONS_TOOLS: list[dict[str, Any]] = [
    {
        "function": {
            "name": "turn_on_flashlight",
            "description": "Turns the flashlight on.",
            "parameters": {
                "type": "OBJECT",
                "properties": {}
            }
        }
    },
    {
        "function": {
            "name": "turn_off_flashlight",
            "description": "Turns the flashlight off.",
            "parameters": {
                "type": "OBJECT",
                "properties": {}
            }
        }
    },
    {
        "function": {
            "name": "open_wifi_settings",
            "description": "Opens the Wi-Fi settings.",
            "parameters": {
                "type": "OBJECT",
                "properties": {}
            }
        }
    },
    {
        "function": {
            "name": "create_contact",
            "description": "Creates a contact in the phone's contact list.",
            "parameters": {
                "type": "OBJECT",
                "properties": {
                    "last_name": {
                        "type": "STRING",
                        "description": "The last name of the contact."
                    },
                    "phone_number": {
                        "type": "STRING",
                        "description": "The phone number of the contact."
                    },
                    "email": {
                        "type": "STRING",
                        "description": "The email address of the contact."
                    },
                    "first_name": {
                        "type": "STRING",
                        "description": "The first name of the contact."
                    }
                },
                "required": [
                    "first_name",
                    "last_name"
                ]
            }
        }
    },
    {
        "function": {
            "name": "send_email",
            "description": "Sends an email.",
            "parameters": {
                "type": "OBJECT",
                "properties": {
                    "subject": {
                        "type": "STRING",
                        "description": "The subject of the email."
                    },
                    "body": {
                        "type": "STRING",
                        "description": "The body of the email."
                    },
                    "to": {
                        "type": "STRING",
                        "description": "The email address of the recipient."
                    }
                },
                "required": [
                    "to",
                    "subject"
                ]
            }
        }
    },
    {
        "function": {
            "name": "show_map",
            "description": "Shows a location on the map.",
            "parameters": {
                "type": "OBJECT",
                "properties": {
                    "query": {
                        "type": "STRING",
                        "description": "The location to search for. May be the name of a place, a business, or an address."
                    }
                },
                "required": [
                    "query"
                ]
            }
        }
    },
    {
        "function": {
            "name": "create_calendar_event",
            "description": "Creates a new calendar event.",
            "parameters": {
                "type": "OBJECT",
                "properties": {
                    "title": {
                        "type": "STRING",
                        "description": "The title of the event."
                    },
                    "datetime": {
                        "type": "STRING",
                        "description": "The date and time of the event in the format YYYY-MM-DDTHH:MM:SS."
                    }
                },
                "required": [
                    "title",
                    "datetime"
                ]
            }
        }
    }
]


def developer_message(now: datetime) -> dict[str, str]:
    """The Mobile Actions developer turn for a given moment."""
    return {
        "role": "developer",
        "content": (
            f"Current date and time given in YYYY-MM-DDTHH:MM:SS format: {now:%Y-%m-%dT%H:%M:%S}\n"
            f"Day of week is {now:%A}\n"
            "You are a model that can do function calling with the following functions\n"
        ),
    }


def build_prompt(request: str, tools: list[dict], now: datetime) -> str:
    return fg.render_prompt(tools, [developer_message(now), {"role": "user", "content": request}])


def read_tools(path: Path) -> list[dict]:
    """Tool declarations from a JSON file; a UserError names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"tools file {path} not found: pass a JSON file with a list of tool declarations") from None
    except json.JSONDecodeError as err:
        raise UserError(f"tools file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list) or not tools:
        raise UserError(f"tools file {path} must hold a non-empty JSON list of tools (or an object with a 'tools' list)")
    for i, tool in enumerate(tools):
        try:
            fg.render_declaration(tool)
        except ValueError as err:
            raise UserError(f"tools file {path}: tool {i} cannot be declared ({err})") from None
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
    tools = read_tools(args.tools) if args.tools else MOBILE_ACTIONS_TOOLS
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
