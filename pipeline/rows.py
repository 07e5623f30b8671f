"""Row shapes: detect each row's shape and normalize it into the one row the format renders.

    from pipeline import rows
    result = rows.normalize_row(obj, schema="auto", developer_text="...")
    result.shape, result.row, result.errors      # "xlam", {"tools": [...], "messages": [...]}, []
    rows.validate_row(result.row)                # every reason it cannot be trained on ([] = none)

Pure: no I/O, standard library only. The shapes (`SHAPES`, tried in this order by `auto`):

- `mobile_actions` (google/mobile-actions, FORMAT.md): `{"metadata"?, "tools": [{"function": {...}}],
  "messages": [developer, user, assistant{tool_calls: [{"function": {name, arguments: {...}}}]}]}`.
  It is the internal row itself.
- `openai` (OpenAI-style chat): `messages` with a `system` (or `developer`) message, tools as
  `{"type": "function", "function": {...}}`, assistant `tool_calls[].function.arguments` as JSON
  text or an object (`id`, `type` kept or not), `role: tool` results named by `name` or by
  `tool_call_id`, `content` as text or a list of text parts. A `messages` row with any of those
  marks is `openai`; one without is `mobile_actions`.
- `xlam` (Salesforce xLAM / APIGen function-calling sets): `{"query": str, "tools": "[...]",
  "answers": "[...]"}`, tools and answers as JSON text; answers are `{"name", "arguments"}`; each
  tool's `parameters` maps a parameter name to `{type, description, default}` with Python-style
  type names (`str`, `List[int]`, `str, optional`, ...), mapped by `xlam_type` onto the
  declaration's types. A parameter is required unless its type says `optional` (or `Optional[...]`,
  `... | None`, `default=...`) or it has a default (xLAM writes `""` for "no default"); a default
  is kept in the description. There is no developer message: the caller passes the text.

In any shape a field holding JSON text instead of JSON (`tools`, `messages`, `answers`,
`tool_calls`, `arguments`, `parameters`, a tool, a tool result object) is decoded, and a
property whose schema is null (what a schema-unifying loader adds) is dropped.

The internal row is `{"tools": [...], "messages": [...], "metadata": "train" | "eval"}` (metadata
optional): what `pipeline.functiongemma.render_row` renders and `validate_row` checks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline import functiongemma as fg

SHAPES = ("mobile_actions", "openai", "xlam")
SCHEMAS = ("auto", *SHAPES)  # the values of data.schema
SPLITS = ("train", "eval")
MAX_DEPTH = 100  # JSON nesting levels a row may have (its arguments: fg.MAX_NESTING, what eval can parse back)
# Text a row may not carry: the format's own control tokens would end an escape, a call or a turn early.
CONTROL_TOKENS = (*fg.FUNCTION_TOKENS.values(), fg.START_OF_TURN, fg.END_OF_TURN, fg.BOS, fg.EOS)
_NAME = re.compile(r"[\w.\-]+")  # a function name the output parser reads back
_BAD_KEY = re.compile(r"[:{}\[\],<]")  # characters that end a bare argument key in the output parser


@dataclass(frozen=True)
class Normalized:
    """One stored row, read: its shape, the internal row (None when it fits no shape) and why not."""

    shape: str
    row: dict | None
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- JSON values


def kind(value: Any) -> str:
    """A JSON type name for messages: null, boolean, integer, number, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def text_nesting(text: str) -> int:
    """How deep brackets nest in JSON text, strings skipped, without parsing it.

    json.loads recurses in C once per level and trusts the interpreter's recursion limit to stop
    it; libraries that raise that limit (as some ML libraries do) turn a deep enough row into a
    crash of the whole process. So depth is measured first, and deep text is never parsed.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth = depth + 1 if bracket in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def loads_json(text: str) -> tuple[Any, str]:
    """(value, "") for standard JSON text, or (None, one short reason): never raises, never crashes."""
    if text_nesting(text) > MAX_DEPTH:
        return None, f"nested deeper than {MAX_DEPTH} levels"
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        at = f"line {err.lineno} column {err.colno}" if err.lineno > 1 else f"column {err.colno}"
        return None, f"invalid JSON ({err.msg} at {at})"
    except RecursionError:
        return None, f"nested deeper than {MAX_DEPTH} levels"
    except ValueError as err:  # NaN/Infinity, an integer with too many digits
        return None, f"invalid JSON ({err})"
    problem = json_problem(value)
    return (None, problem) if problem else (value, "")


def json_problem(value: Any, max_depth: int = MAX_DEPTH) -> str:
    """The first reason a parsed value cannot be written back as UTF-8 JSON or rendered ("" = none).

    Iterative, so any depth is measured without recursion: nesting deeper than `max_depth`, an
    unpaired UTF-16 surrogate (from a "\\ud800" escape), a non-finite number (1e999).
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth + 1 > max_depth:
                return f"nested deeper than {max_depth} levels"
            children = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for key, child in children:
                if isinstance(key, str) and not _is_utf8(key):
                    return "holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape)"
                stack.append((child, depth + 1))
        elif isinstance(item, str):
            if not _is_utf8(item):
                return "holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape)"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds the number {item}, which JSON cannot write"
    return ""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def nesting(value: Any) -> int:
    """Nesting depth of a JSON value (0 for a scalar, 1 for a flat list/object), iteratively."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def strings_in(value: Any):
    """Every string (keys included) inside a JSON value, iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    yield key
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _decoded(value: Any, what: str, errors: list[str]) -> Any:
    """A field that may hold JSON text: the decoded value (the text itself when it is not JSON)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        decoded, error = loads_json(value)
        if error:
            errors.append(f"'{what}' holds JSON text that cannot be read: {error}")
            return None
        return decoded
    return value


# ---------------------------------------------------------------- shapes


def _openai_marks(row: dict) -> list[str]:
    """What makes a `messages` row OpenAI-style rather than Mobile Actions (empty: none)."""
    marks = []
    tools, messages = row.get("tools"), row.get("messages")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            marks.append('tools with "type": "function"')
            break
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        if m.get("role") in ("system", "tool"):
            marks.append(f"a {m['role']!r} message")
        if isinstance(m.get("content"), list):
            marks.append("content as a list of parts")
        calls = m.get("tool_calls")
        if isinstance(calls, str):
            marks.append("tool_calls as JSON text")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and ("id" in call or "type" in call):
                marks.append("tool calls with an id or type")
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                marks.append("arguments as JSON text")
    return list(dict.fromkeys(marks))


def _fits(shape: str, row: dict) -> str:
    """Why a row does not fit a shape ("" = it fits). JSON-text fields are already decoded."""
    if shape == "xlam":
        if "query" not in row or "answers" not in row:
            return "no 'query' and 'answers'"
        return ""
    if not isinstance(row.get("messages"), list):
        return "no 'messages' list"
    if shape == "mobile_actions":
        marks = _openai_marks(row)
        if marks:
            return f"it has {', '.join(marks)} (an openai row)"
    return ""


def detect_shape(row: dict, schema: str = "auto") -> tuple[str, str]:
    """(shape, "") for the first shape of SHAPES the row fits (or the named one), else ("", reason)."""
    if schema != "auto":
        reason = _fits(schema, row)
        return (schema, "") if not reason else ("", f"does not fit data.schema {schema!r}: {reason}")
    tried = []
    for shape in SHAPES:
        reason = _fits(shape, row)
        if not reason:
            return shape, ""
        tried.append(f"{shape}: {reason}")
    return "", f"fits no row shape (tried {'; '.join(tried)})"


def normalize_row(obj: Any, schema: str = "auto", developer_text: str = "") -> Normalized:
    """One stored row -> its shape and the internal row (see the module docstring)."""
    if not isinstance(obj, dict):
        return Normalized("", None, [f"expected a JSON object, got {kind(obj)}"])
    errors: list[str] = []
    row = dict(obj)
    for key in ("tools", "messages", "answers"):
        if key in row:
            row[key] = _decoded(row[key], key, errors)
    if errors:
        return Normalized("", None, errors)
    shape, reason = detect_shape(row, schema)
    if not shape:
        return Normalized("", None, [reason])
    if shape == "xlam":
        internal = _from_xlam(row, developer_text, errors)
    else:
        internal = _from_messages(row, errors)
    return Normalized(shape, internal if not errors else None, errors)


def _from_messages(row: dict, errors: list[str]) -> dict:
    """A Mobile Actions or OpenAI-style row -> the internal row (new objects; the input is kept)."""
    out = {k: v for k, v in row.items() if k in ("tools", "messages", "metadata")}
    if isinstance(row.get("tools"), list):
        out["tools"] = normalize_tools(row["tools"], errors)
    messages = []
    names_by_id: dict[str, str] = {}
    for i, m in enumerate(row["messages"]):
        if not isinstance(m, dict):
            messages.append(m)
            continue
        m = dict(m)
        if m.get("role") == "model":  # Gemma's name for the assistant
            m["role"] = "assistant"
        if isinstance(m.get("content"), list):
            m["content"] = _joined_text(m["content"])
        if "tool_calls" in m:
            m["tool_calls"] = _decoded(m["tool_calls"], f"messages[{i}].tool_calls", errors)
            if isinstance(m["tool_calls"], list):
                m["tool_calls"] = [_normalized_call(c, f"messages[{i}].tool_calls[{j}]", errors, names_by_id)
                                   for j, c in enumerate(m["tool_calls"])]
        if m.get("role") == "tool":
            if not isinstance(m.get("name"), str) and isinstance(m.get("tool_call_id"), str):
                if m["tool_call_id"] not in names_by_id:
                    errors.append(f"messages[{i}]: tool_call_id {m['tool_call_id']!r} matches no earlier tool call")
                else:
                    m["name"] = names_by_id[m["tool_call_id"]]
            if isinstance(m.get("content"), str):
                decoded, error = loads_json(m["content"]) if m["content"].lstrip()[:1] == "{" else (None, "text")
                if not error:
                    m["content"] = decoded
        messages.append(m)
    out["messages"] = messages
    return out


def _joined_text(parts: list) -> Any:
    """OpenAI content parts [{"type": "text", "text": ...}] -> one text; other parts stay (and are rejected)."""
    if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _normalized_call(call: Any, where: str, errors: list[str], names_by_id: dict[str, str]) -> Any:
    if not isinstance(call, dict):
        return call
    call = dict(call)
    fn = call.get("function")
    if isinstance(fn, dict):
        fn = dict(fn)
        if "arguments" in fn:
            fn["arguments"] = _decoded(fn["arguments"], f"{where}.function.arguments", errors)
        call["function"] = fn
        if isinstance(call.get("id"), str) and isinstance(fn.get("name"), str):
            names_by_id[call["id"]] = fn["name"]
    return call


def normalize_tools(tools: list, errors: list[str]) -> list:
    """Tools as declared, JSON-text parts decoded; xLAM parameter maps become JSON schemas.

    A tool that is already a JSON-schema declaration comes back equal to itself.
    """
    out = []
    for i, tool in enumerate(tools):
        tool = _decoded(tool, f"tools[{i}]", errors)
        if not isinstance(tool, dict):
            out.append(tool)
            continue
        wrapped = isinstance(tool.get("function"), dict)
        spec = dict(tool["function"] if wrapped else tool)
        if "parameters" in spec:
            params = _decoded(spec["parameters"], f"tools[{i}].parameters", errors)
            if isinstance(params, dict) and not is_json_schema(params):
                params = xlam_parameters(params, f"tools[{i}]", errors)
            spec["parameters"] = _without_null_properties(params)
        out.append({**tool, "function": spec} if wrapped else spec)
    return out


def _without_null_properties(schema: Any) -> Any:
    """Drop properties whose schema is null at every level (schema-unifying loaders add them)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: _without_null_properties(v) for k, v in props.items() if v is not None}
    items = schema.get("items")
    if isinstance(items, dict):
        out["items"] = _without_null_properties(items)
    return out


_SCHEMA_KEYS = {"type", "properties", "required", "description", "additionalProperties", "title", "$schema",
                "$defs", "definitions", "anyOf", "oneOf", "allOf"}


def is_json_schema(params: dict) -> bool:
    """A JSON-schema object ({"type": "object", "properties": ...}) rather than an xLAM map of parameters.

    A schema has a `type` that is not an object (a string, or a wrong value validation reports), or
    a `properties` object beside nothing but schema keywords; an xLAM map's values are parameter
    specs (a parameter may itself be called "type" or "properties", but then its value is a spec
    object).
    """
    if not params or ("type" in params and not isinstance(params["type"], dict)):
        return True  # an xLAM parameter called "type" has a spec object as its value
    props = params.get("properties")
    if not isinstance(props, dict) or isinstance(props.get("type"), str):
        return False
    return set(params) <= _SCHEMA_KEYS


# ---------------------------------------------------------------- xLAM


def _from_xlam(row: dict, developer_text: str, errors: list[str]) -> dict:
    query, tools, answers = row.get("query"), row.get("tools"), row.get("answers")
    if not isinstance(query, str):
        errors.append(f"'query' must be text, got {kind(query)}")
    if not isinstance(tools, list):
        errors.append(f"'tools' must be a list (or JSON text of one), got {kind(tools)}")
        tools = []
    if not isinstance(answers, list):
        errors.append(f"'answers' must be a list (or JSON text of one), got {kind(answers)}")
        answers = []
    elif not answers:
        errors.append("'answers' is empty: a row needs at least one call to train on")
    declared = [{"function": t} if isinstance(t, dict) and not isinstance(t.get("function"), dict) else t
                for t in normalize_tools(tools, errors)]
    calls = []
    for i, answer in enumerate(answers):
        answer = _decoded(answer, f"answers[{i}]", errors)
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            errors.append(f"answers[{i}] must be an object with a 'name' and 'arguments'")
            continue
        arguments = _decoded(answer.get("arguments", {}), f"answers[{i}].arguments", errors)
        calls.append({"function": {"name": answer["name"], "arguments": {} if arguments is None else arguments}})
    internal = {"tools": declared,
                "messages": [{"role": "developer", "content": developer_text},
                             {"role": "user", "content": query},
                             {"role": "assistant", "tool_calls": calls}]}
    if "metadata" in row:
        internal["metadata"] = row["metadata"]
    return internal


def xlam_parameters(params: dict, where: str, errors: list[str]) -> dict:
    """An xLAM parameter map {name: {type, description, default}} -> a JSON schema of the declaration."""
    properties, required = {}, []
    for name, spec in params.items():
        if isinstance(spec, str):  # {"city": "str"}: the type alone
            spec = {"type": spec}
        if not isinstance(spec, dict):
            errors.append(f"{where}.parameters.{name} must be an object {{type, description, default}}, got {kind(spec)}")
            continue
        type_text = spec.get("type")
        if type_text is not None and not isinstance(type_text, str):
            errors.append(f"{where}.parameters.{name}.type must be a type name such as \"str\", got {kind(type_text)}")
            continue
        schema, optional = xlam_type(type_text or "")
        default = spec.get("default")
        has_default = "default" in spec and default not in (None, "")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            errors.append(f"{where}.parameters.{name}.description must be text, got {kind(description)}")
            continue
        if has_default:
            shown = json.dumps(default, ensure_ascii=False)
            description = f"{description.rstrip()} (default: {shown})" if description else f"default: {shown}"
        properties[name] = {**({"description": description} if description else {}), **schema}
        if not (optional or has_default):
            required.append(name)
    out: dict[str, Any] = {"type": "OBJECT", "properties": properties}
    if required:
        out["required"] = required
    return out


_SCALARS = {
    "str": "STRING", "string": "STRING", "text": "STRING", "char": "STRING", "bytes": "STRING",
    "date": "STRING", "datetime": "STRING", "time": "STRING", "datetime.date": "STRING",
    "datetime.datetime": "STRING", "uuid": "STRING", "path": "STRING", "url": "STRING",
    "int": "INTEGER", "integer": "INTEGER", "long": "INTEGER",
    "float": "NUMBER", "number": "NUMBER", "double": "NUMBER", "decimal": "NUMBER",
    "bool": "BOOLEAN", "boolean": "BOOLEAN",
}
_ARRAYS = {"list", "array", "tuple", "set", "frozenset", "sequence", "iterable"}
_OBJECTS = {"dict", "object", "mapping", "map", "json"}
_NONE = {"none", "nonetype", "null"}


def xlam_type(text: str) -> tuple[dict, bool]:
    """A Python-style type name -> (JSON-schema fragment, optional).

    `str` STRING, `int` INTEGER, `float` NUMBER, `bool` BOOLEAN, `List[int]` ARRAY with INTEGER items,
    `Dict[str, Any]` OBJECT, `Literal["a", "b"]` STRING with an enum; `str, optional`, `Optional[str]`,
    `str | None`, `int, default=5` are optional. A name it does not know (`Any`, `Callable`) gives no
    type: the declaration says nothing rather than something wrong.
    """
    parts = _split_top(text, ",")
    optional = any(p.strip().lower() == "optional" or p.strip().lower().startswith("default") for p in parts[1:])
    schema, none_allowed = _type_expr(parts[0].strip() if parts else "", depth=0)
    return schema, optional or none_allowed


def _type_expr(text: str, depth: int) -> tuple[dict, bool]:
    """(schema, None allowed) for one type expression."""
    if depth > 8 or not text:
        return {}, False
    alternatives = _split_top(text, "|")
    if len(alternatives) > 1:
        return _union([a.strip() for a in alternatives], depth)
    match = re.fullmatch(r"([\w.]+)\s*\[(.*)\]", text, re.S)
    name = (match.group(1) if match else text).strip().lower().removeprefix("typing.")
    args = [a.strip() for a in _split_top(match.group(2), ",")] if match else []
    if name == "optional":
        return _type_expr(args[0] if args else "", depth + 1)[0], True
    if name == "union":
        return _union(args, depth)
    if name == "literal":
        values = [_literal(a) for a in args]
        if values and all(isinstance(v, str) for v in values):
            return {"type": "STRING", "enum": values}, False
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return {"type": "INTEGER", "enum": values}, False
        return {}, False
    if name in _NONE:
        return {}, True
    if name in _SCALARS:
        return {"type": _SCALARS[name]}, False
    if name in _ARRAYS:
        items = [_type_expr(a, depth + 1)[0] for a in args if a != "..."]
        same = items and all(i == items[0] for i in items) and items[0]
        return ({"type": "ARRAY", "items": items[0]} if same else {"type": "ARRAY"}), False
    if name in _OBJECTS:
        return {"type": "OBJECT"}, False
    return {}, False


def _union(alternatives: list[str], depth: int) -> tuple[dict, bool]:
    none_allowed = any(a.lower() in _NONE for a in alternatives)
    schemas = [_type_expr(a, depth + 1)[0] for a in alternatives if a.lower() not in _NONE]
    types = {s.get("type") for s in schemas}
    if len(schemas) == 1:
        return schemas[0], none_allowed
    if types == {"INTEGER", "NUMBER"}:
        return {"type": "NUMBER"}, none_allowed
    if len(types) == 1 and None not in types:
        return {"type": types.pop()}, none_allowed
    return {}, none_allowed


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        return None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets: "Dict[str, int], optional" -> ["Dict[str, int]", " optional"]."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "[(":
            depth += 1
        elif c in "])":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


# ---------------------------------------------------------------- validation


def schema_problems(schema: Any, where: str) -> list[str]:
    """Every reason a declaration's schema fragment cannot be rendered faithfully ([] = none)."""
    if not isinstance(schema, dict):
        return [f"{where} must be an object schema, got {kind(schema)}"]
    problems = []
    declared_type = schema.get("type")
    if declared_type is not None and not isinstance(declared_type, str):
        problems.append(f"{where}.type must be a type name such as \"string\", got {kind(declared_type)}")
    if schema.get("description") is not None and not isinstance(schema["description"], str):
        problems.append(f"{where}.description must be text, got {kind(schema['description'])}")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            problems.append(f"{where}.properties must be an object, got {kind(props)}")
        else:
            for name, sub in props.items():
                problems += schema_problems(sub, f"{where}.properties.{name}")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        problems.append(f"{where}.required must be a list of property names")
    if schema.get("enum") is not None and not isinstance(schema["enum"], list):
        problems.append(f"{where}.enum must be a list, got {kind(schema['enum'])}")
    items = schema.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            problems += schema_problems(sub, f"{where}.items[{i}]")
    elif items is not None:
        problems += schema_problems(items, f"{where}.items")
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                problems += schema_problems(sub, f"{where}.{key}[{i}]")
    return problems


def tool_problems(tool: Any, index: int) -> tuple[str, list[str]]:
    """(function name or "", every reason tools[index] cannot be declared)."""
    if not isinstance(tool, dict):
        return "", [f"tools[{index}] must be an object, got {kind(tool)}"]
    spec = fg.unwrap_tool(tool)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        return "", [f"tools[{index}] has no function name"]
    if not _NAME.fullmatch(name):
        return name, [f"tools[{index}] name {name!r} cannot be called back: use letters, digits, '_', '.' and '-'"]
    problems = []
    if spec.get("description") is not None and not isinstance(spec["description"], str):
        problems.append(f"tool {name!r}: description must be text, got {kind(spec['description'])}")
    params = spec.get("parameters")
    if params is not None:
        problems += schema_problems(params, f"tool {name!r}: parameters")
    return name, problems


def _content_problem(message: dict, index: int) -> str:
    role, content = message["role"], message.get("content")
    if role in ("user", "developer", "system"):
        if not isinstance(content, str):
            return f"messages[{index}] ({role}): content must be text, got {kind(content)}"
        if role == "user" and not content.strip():
            return f"messages[{index}] (user): content is empty"
    elif role == "assistant":
        if content is not None and not isinstance(content, str):
            return f"messages[{index}] (assistant): content must be text or null, got {kind(content)}"
        if not message.get("tool_calls") and not (content or "").strip():
            return f"messages[{index}] (assistant) has neither tool_calls nor content"
    return ""


def validate_row(row: Any) -> list[str]:
    """Every reason this internal row cannot become a training example (empty list: it can)."""
    if not isinstance(row, dict):
        return [f"expected a JSON object, got {kind(row)}"]
    problem = json_problem(row)
    if problem:
        return [problem]  # too deep to look inside safely, or not writable back
    errors: list[str] = []
    if row.get("metadata") is not None and row.get("metadata") not in SPLITS:
        errors.append(f"metadata must be 'train' or 'eval' (or absent), got {row.get('metadata')!r}")
    tools = row.get("tools")
    declared: dict[str, dict] = {}
    if not isinstance(tools, list):
        errors.append("missing 'tools' list")
    else:
        for i, tool in enumerate(tools):
            name, problems = tool_problems(tool, i)
            errors.extend(problems)
            if name and not problems:
                params = fg.unwrap_tool(tool).get("parameters")
                declared[name] = params if isinstance(params, dict) else {}
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        errors.append("missing 'messages' list")
        return errors
    if any(not isinstance(m, dict) or not isinstance(m.get("role"), str) for m in messages):
        errors.append("every message needs a 'role'")
        return errors
    last = messages[-1]
    if last["role"] != "assistant":
        errors.append(f"the last message must be the assistant's answer, got role {last['role']!r}")
        return errors
    if not any(m["role"] == "user" for m in messages):
        errors.append("no user message")
    errors.extend(p for i, m in enumerate(messages) if (p := _content_problem(m, i)))
    for text in strings_in([tools, messages]):
        token = next((t for t in CONTROL_TOKENS if t in text), None)
        if token:
            errors.append(f"text holds the control token {token!r}, which would break the format")
            break
    try:
        calls = fg.calls_from_message(last)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        errors.append(f"unreadable tool_calls: {err}")
        return errors
    if isinstance(tools, list):
        for call in calls:
            errors.extend(_call_problems(call, declared))
    if not errors:
        try:
            fg.render_row(row)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            errors.append(f"cannot be rendered: {err}")
    return errors


def _call_problems(call: fg.Call, declared: dict[str, dict]) -> list[str]:
    if call.name not in declared:
        return [f"calls undeclared tool {call.name!r}"]
    if nesting(call.arguments) > fg.MAX_NESTING:
        return [f"{call.name}: arguments nested deeper than {fg.MAX_NESTING} levels (more than eval can parse back)"]
    bad_keys = [k for k in strings_in_keys(call.arguments) if not k or _BAD_KEY.search(k)]
    if bad_keys:
        return [f"{call.name}: argument key {bad_keys[0]!r} cannot be parsed back (no ':', braces, brackets, ',' or '<')"]
    params = declared[call.name]
    properties = params.get("properties") or {}
    errors = [f"{call.name}: argument {key!r} is not declared by the tool" for key in call.arguments if key not in properties]
    errors += [f"{call.name}: required argument {key!r} is missing" for key in params.get("required") or [] if key not in call.arguments]
    return errors


def strings_in_keys(value: Any):
    """Every object key inside a JSON value, iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from (k for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def user_text(messages: list[dict]) -> str:
    """The last user request of a conversation (for review material)."""
    return next((m["content"].strip() for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)), "")


def request_key(messages: list[dict]) -> str:
    """What a row asks, for splitting and leakage: every user message, case and spacing folded."""
    texts = [" ".join(m["content"].split()).casefold() for m in messages
             if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
    return "\n".join(texts)
