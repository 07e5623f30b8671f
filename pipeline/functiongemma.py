"""The FunctionGemma text format: render rows to prompt/completion text, parse model output.

This is the one place that knows the format (see ../shared/docs/FORMAT.md, the spec);
format, train, eval, predict and convert import it. It is pure: no I/O, stdlib only.
Its twin, pipeline/chat_template.jinja, renders the same bytes inside
`tokenizer.apply_chat_template`; tests/test_chat_template.py keeps the two equal.

    from pipeline.functiongemma import render_row, parse_output
    render_row(row)            # {"prompt": "<bos><start_of_turn>developer\\n...", "completion": "..."}
    parse_output(generated)    # ParsedOutput(calls=[Call(...)], text="", malformed=False)

Choices where FORMAT.md is silent follow the FunctionGemma template Google publishes
(LiteRT-LM's built-in FunctionGemma template and the "Full function calling sequence
with FunctionGemma" notebook output):
- Tools but no developer/system message: the developer turn still opens, holding only
  the declarations. A "system" first message is rendered as the developer turn.
- Multi-turn: an assistant turn with tool_calls stays open; each "tool" message adds
  `<start_function_response>response:NAME{...}<end_function_response>` in that same model
  turn, and the next assistant message continues it (no new `<start_of_turn>model\\n`)
  and closes it with `<end_of_turn>\\n`. So after tool responses the generation prompt
  is empty: the model continues right after `<end_function_response>`.
- An assistant message with both content and tool_calls renders the text, then the calls.
- Keys are sorted like Jinja's `dictsort` (case-insensitive, ties keep their order).
- Declarations: entries whose value is null or an empty list/object are left out
  (hence no empty `properties`/`required`); a missing `parameters` or `type` is OBJECT.
- A tool response that is not an object renders as `response:NAME{value:...}`.
- Numbers render as Python's str() (what Jinja prints): 15, 1.5, 1e+16.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
START_DECLARATION, END_DECLARATION = "<start_function_declaration>", "<end_function_declaration>"
START_CALL, END_CALL = "<start_function_call>", "<end_function_call>"
START_RESPONSE, END_RESPONSE = "<start_function_response>", "<end_function_response>"
ESCAPE = "<escape>"

# Gemma 3 reserved ids <unused40>..<unused46>, renamed by FunctionGemma.
FUNCTION_TOKENS: dict[int, str] = {
    46: START_DECLARATION,
    47: END_DECLARATION,
    48: START_CALL,
    49: END_CALL,
    50: START_RESPONSE,
    51: END_RESPONSE,
    52: ESCAPE,
}
# The Jinja twin of this module, attached to every model folder the pipeline writes (a path, not read here).
CHAT_TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")
STOP_TOKENS: tuple[str, ...] = (START_RESPONSE, END_OF_TURN, EOS)  # generation stops on any of these

_MODEL_TURN = START_OF_TURN + "model\n"


@dataclass(frozen=True)
class Call:
    """One function call: a name and JSON-valued arguments."""

    name: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedOutput:
    """What `parse_output` found in generated text."""

    calls: list[Call]  # every well-formed call, in order
    text: str  # non-call text (a text answer), trimmed, stop tokens removed
    malformed: bool  # something looked like a call but could not be parsed
    error: str = ""  # short reason when malformed


# --------------------------------------------------------------------------- render


def _sorted_items(mapping: dict) -> list[tuple[Any, Any]]:
    """Items sorted by key the way Jinja's `dictsort` does (case-insensitive, stable)."""
    return sorted(mapping.items(), key=lambda kv: kv[0].lower() if isinstance(kv[0], str) else kv[0])


def render_value(value: Any) -> str:
    """A JSON value in FunctionGemma syntax: <escape>str<escape>, 15, true, null, [a,b], {k:v}."""
    if isinstance(value, str):
        return ESCAPE + value + ESCAPE
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render_value(v)}" for k, v in _sorted_items(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    return str(value)  # numbers, as Jinja prints them


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (dict, list, tuple)) and len(value) == 0)


def _render_schema(value: Any, key: str = "") -> str:
    """A JSON-schema fragment: keys sorted, empty entries dropped, `type` upper-cased."""
    if isinstance(value, dict):
        if key == "properties":  # property name -> schema: every property is kept
            return "{" + ",".join(f"{k}:{_render_schema(v)}" for k, v in _sorted_items(value)) + "}"
        kept = [(k, v) for k, v in _sorted_items(value) if not _is_empty(v)]
        return "{" + ",".join(f"{k}:{_render_schema(v, k)}" for k, v in kept) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render_schema(v, key) for v in value) + "]"
    if key == "type" and isinstance(value, str):
        return render_value(value.upper())
    return render_value(value)


def unwrap_tool(tool: dict) -> dict:
    """The inner {name, description, parameters} of a tool, wrapped ({"function": ...}) or bare."""
    if not isinstance(tool, dict):
        raise ValueError(f"a tool must be an object, got {type(tool).__name__}")
    inner = tool.get("function")
    return inner if isinstance(inner, dict) else tool


def render_declaration(tool: dict) -> str:
    """<start_function_declaration>declaration:NAME{description:...,parameters:{...}}<end_function_declaration>."""
    fn = unwrap_tool(tool)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("every tool needs a non-empty string 'name'")
    params = fn.get("parameters") or {}
    if not isinstance(params, dict):
        raise ValueError(f"tool {name!r}: 'parameters' must be an object")
    if "type" not in params:
        params = {**params, "type": "object"}
    body = []  # only description and parameters; "return" and the rest are left out
    if fn.get("description") is not None:
        body.append("description:" + render_value(fn["description"]))
    body.append("parameters:" + _render_schema(params))
    return f"{START_DECLARATION}declaration:{name}{{{','.join(body)}}}{END_DECLARATION}"


def render_call(call: Call) -> str:
    """<start_function_call>call:NAME{k:v,...}<end_function_call>, arguments sorted by key."""
    args = ",".join(f"{k}:{render_value(v)}" for k, v in _sorted_items(call.arguments))
    return f"{START_CALL}call:{call.name}{{{args}}}{END_CALL}"


def render_tool_response(name: str, response: Any) -> str:
    """<start_function_response>response:NAME{key:value,...}<end_function_response>."""
    if isinstance(response, dict):
        body = ",".join(f"{k}:{render_value(v)}" for k, v in _sorted_items(response))
    else:
        body = "value:" + render_value(response)
    return f"{START_RESPONSE}response:{name}{{{body}}}{END_RESPONSE}"


def calls_from_message(message: dict) -> list[Call]:
    """The assistant message's tool_calls as Calls ("function" wrappers; arguments a dict or JSON string)."""
    calls = []
    for raw in message.get("tool_calls") or []:
        fn = raw.get("function") if isinstance(raw, dict) and isinstance(raw.get("function"), dict) else raw
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"tool call without a string 'name': {raw!r}")
        args = fn.get("arguments")
        if args is None:
            args = {}
        elif isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as err:
                raise ValueError(f"tool call {fn['name']!r}: arguments are not valid JSON ({err})") from err
        if not isinstance(args, dict):
            raise ValueError(f"tool call {fn['name']!r}: arguments must be an object")
        calls.append(Call(fn["name"], args))
    return calls


def _content(message: dict) -> str:
    """A message's text content, trimmed ("" when absent)."""
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ValueError(f"{message.get('role')!r} message content must be a string")
    return content.strip()


def _render_assistant(message: dict, last: bool) -> str:
    """An assistant turn's body: text then calls (+ <start_function_response> when last),
    or text + <end_of_turn>\\n."""
    calls = calls_from_message(message)
    if not calls:
        return _content(message) + END_OF_TURN + "\n"
    return _content(message) + "".join(map(render_call, calls)) + (START_RESPONSE if last else "")


def render_completion(message: dict) -> str:
    """The trained tokens of a final assistant message.

    Calls + <start_function_response>, or trimmed text + <end_of_turn>\\n.
    """
    return _render_assistant(message, last=True)


def _tool_responses(message: dict) -> list[tuple[str, Any]]:
    """(name, response) pairs of a "tool" message.

    Accepts content {"name", "response"}, a list of those (Google's notebook), or
    {"role": "tool", "name": NAME, "content": RESPONSE} (OpenAI style).
    """
    content = message.get("content")
    if isinstance(content, dict) and "name" in content and "response" in content:
        return [(content["name"], content["response"])]
    if (
        isinstance(content, list)
        and content
        and all(isinstance(c, dict) and "name" in c and "response" in c for c in content)
    ):
        return [(c["name"], c["response"]) for c in content]
    if isinstance(message.get("name"), str):
        return [(message["name"], content)]
    raise ValueError("a tool message needs content {'name', 'response'} (or a list of them) or a 'name'")


def render_conversation(tools: list[dict], messages: list[dict]) -> tuple[str, str]:
    """The chat as the template renders it without a generation prompt.

    Returns (text, state), state being "call" (ends with tool calls awaiting a response),
    "response" (ends inside the model turn after tool responses) or "" (a closed turn).
    """
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"every message must be an object with a string 'role', got {m!r}")
    out = [BOS]
    rest = list(messages)
    system = rest.pop(0) if rest and rest[0]["role"] in ("developer", "system") else None
    if tools or system is not None:
        out.append(START_OF_TURN + "developer\n")
        out.append(_content(system) if system is not None else "")
        out.extend(render_declaration(t) for t in tools or [])
        out.append(END_OF_TURN + "\n")
    state = ""
    for index, m in enumerate(rest):
        if m["role"] == "tool":
            if state not in ("call", "response"):
                raise ValueError("a 'tool' message must follow an assistant message with tool_calls")
            out.extend(render_tool_response(name, resp) for name, resp in _tool_responses(m))
            state = "response"
            continue
        if state == "call":
            raise ValueError("assistant tool_calls must be followed by 'tool' messages")
        if m["role"] == "assistant":
            if state != "response":  # after tool responses the model turn is still open
                out.append(_MODEL_TURN)
            out.append(_render_assistant(m, last=index == len(rest) - 1))
            state = "call" if m.get("tool_calls") else ""
        else:
            out.append(f"{START_OF_TURN}{m['role']}\n{_content(m)}{END_OF_TURN}\n")
            state = ""
    return "".join(out), state


def render_prompt(tools: list[dict], messages: list[dict]) -> str:
    """Everything before the next assistant turn's tokens (ends "<start_of_turn>model\\n",
    or "<end_function_response>" when the model continues after tool responses)."""
    text, state = render_conversation(tools, messages)
    if state == "call":
        raise ValueError("the conversation ends with tool calls that have no 'tool' response")
    return text if state == "response" else text + _MODEL_TURN


def render_row(row: dict) -> dict:
    """{"prompt", "completion"} for a row {"tools": [...], "messages": [..., final assistant message]}."""
    if not isinstance(row, dict):
        raise ValueError("a row must be a JSON object")
    tools, messages = row.get("tools") or [], row.get("messages")
    if not isinstance(tools, list):
        raise ValueError("row 'tools' must be a list")
    if not isinstance(messages, list) or not messages:
        raise ValueError("row has no 'messages'")
    final = messages[-1]
    if not isinstance(final, dict) or final.get("role") != "assistant":
        raise ValueError("the last message of a row must be the assistant's")
    if not final.get("tool_calls") and not _content(final):
        raise ValueError("the final assistant message has neither tool_calls nor content")
    try:
        return {"prompt": render_prompt(tools, messages[:-1]), "completion": render_completion(final)}
    except (TypeError, AttributeError, KeyError) as err:  # odd shapes deep inside a tool or message
        raise ValueError(f"row cannot be rendered: {err!r}") from err


# --------------------------------------------------------------------------- parse

MAX_NESTING = 64  # call arguments nested deeper than this are reported by the parser, not recursed into
_MAX_DEPTH = MAX_NESTING
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"[\w.\-]+")
_KEY_END = re.compile(r"[:{}\[\],<]")  # a bare key runs up to ':'
_NEXT_MARK = re.compile("|".join(map(re.escape, (START_CALL, *STOP_TOKENS))))


class _Bad(Exception):
    """A call that cannot be parsed; the message is the short reason."""


def _fail(s: str, i: int, what: str) -> _Bad:
    return _Bad("truncated call" if i >= len(s) else f"{what} at offset {i}")


def _parse_string(s: str, i: int) -> tuple[str, int]:
    end = s.find(ESCAPE, i + len(ESCAPE))
    if end < 0:
        raise _Bad("unbalanced <escape>")
    return s[i + len(ESCAPE) : end], end + len(ESCAPE)


def _parse_value(s: str, i: int, depth: int) -> tuple[Any, int]:
    if s.startswith(ESCAPE, i):
        return _parse_string(s, i)
    if s.startswith("{", i):
        return _parse_object(s, i, depth + 1)
    if s.startswith("[", i):
        return _parse_list(s, i, depth + 1)
    for word, value in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return value, i + len(word)
    match = _NUMBER.match(s, i)
    if not match:
        raise _fail(s, i, "bad value")
    number = match.group()
    try:
        return (float(number) if any(c in number for c in ".eE") else int(number)), match.end()
    except ValueError as err:  # e.g. an int too long to convert
        raise _Bad(f"bad number at offset {i}") from err


def _parse_list(s: str, i: int, depth: int) -> tuple[list, int]:
    if depth > _MAX_DEPTH:
        raise _Bad("nesting too deep")
    i, items = i + 1, []
    if s.startswith("]", i):
        return items, i + 1
    while True:
        value, i = _parse_value(s, i, depth)
        items.append(value)
        if s.startswith(",", i):
            i += 1
        elif s.startswith("]", i):
            return items, i + 1
        else:
            raise _fail(s, i, "expected ',' or ']'")


def _parse_key(s: str, i: int) -> tuple[str, int]:
    if s.startswith(ESCAPE, i):  # tolerate escaped keys
        key, i = _parse_string(s, i)
    else:
        end = _KEY_END.search(s, i)
        if end is None or end.group() != ":" or end.start() == i:
            raise _fail(s, end.start() if end else len(s), "bad key")
        key, i = s[i : end.start()], end.start()
    if not s.startswith(":", i):
        raise _fail(s, i, "expected ':'")
    return key, i + 1


def _parse_object(s: str, i: int, depth: int) -> tuple[dict, int]:
    if depth > _MAX_DEPTH:
        raise _Bad("nesting too deep")
    i, obj = i + 1, {}
    if s.startswith("}", i):
        return obj, i + 1
    while True:
        key, i = _parse_key(s, i)
        obj[key], i = _parse_value(s, i, depth)
        if s.startswith(",", i):
            i += 1
        elif s.startswith("}", i):
            return obj, i + 1
        else:
            raise _fail(s, i, "expected ',' or '}'")


def _parse_call(s: str, i: int) -> tuple[Call, int]:
    """Parse `call:NAME{...}<end_function_call>` starting at i (just after <start_function_call>)."""
    if not s.startswith("call:", i):
        raise _fail(s, i, "expected 'call:'")
    brace = s.find("{", i + 5)
    if brace < 0:
        raise _Bad("truncated call")
    name = s[i + 5 : brace]
    if not _NAME.fullmatch(name):
        raise _Bad(f"bad function name {name[:40]!r}")
    arguments, i = _parse_object(s, brace, 1)
    if not s.startswith(END_CALL, i):
        raise _fail(s, i, "expected <end_function_call>")
    return Call(name, arguments), i + len(END_CALL)


def _parse(text: str) -> ParsedOutput:
    calls: list[Call] = []
    texts: list[str] = []
    errors: list[str] = []
    i, after_call, skipping = 0, False, False
    while True:
        mark = _NEXT_MARK.search(text, i)
        chunk = text[i : mark.start() if mark else len(text)]
        if skipping:  # the rest of a call that failed to parse
            skipping = False
        elif chunk.strip():
            if after_call:
                errors.append("text between or after function calls")
            if any(token in chunk for token in FUNCTION_TOKENS.values()):
                errors.append("stray function token outside a call")
            texts.append(chunk)
        if mark is None or mark.group() != START_CALL:  # end of text, or a stop token
            break
        after_call = True
        try:
            call, i = _parse_call(text, mark.end())
            calls.append(call)
        except _Bad as bad:
            errors.append(str(bad))
            i, skipping = mark.end(), True
    return ParsedOutput(calls, "".join(texts).strip(), bool(errors), errors[0] if errors else "")


def parse_output(text: str) -> ParsedOutput:
    """Calls and text in generated output. Never raises: problems set `malformed`."""
    if not isinstance(text, str):
        return ParsedOutput([], "", True, f"expected text, got {type(text).__name__}")
    try:
        return _parse(text)
    except Exception as err:  # a last guard: the contract is to never raise
        return ParsedOutput([], "", True, f"parser error: {type(err).__name__}")
