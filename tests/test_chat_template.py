"""pipeline/chat_template.jinja must render exactly what pipeline/functiongemma.py renders.

The template is rendered through transformers' own `render_jinja_template` (the code
`tokenizer.apply_chat_template` runs: sandboxed Jinja with trim_blocks/lstrip_blocks,
its `raise_exception` and `tojson`), with the tokenizer's `bos_token`.

    .venv/bin/python -m pytest -q tests/test_chat_template.py
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.utils.chat_template_utils import render_jinja_template

from pipeline.functiongemma import BOS, render_completion, render_conversation, render_prompt, render_row

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = (ROOT / "pipeline" / "chat_template.jinja").read_text()


def apply_template(messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> str:
    """What `tokenizer.apply_chat_template(..., tokenize=False)` returns with this template."""
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=TEMPLATE,
        add_generation_prompt=add_generation_prompt,
        bos_token=BOS,
    )
    return rendered[0]


def assert_same_as_module(tools: list[dict], messages: list[dict]) -> None:
    """Generation prompt == render_prompt; the whole conversation == prompt + completion."""
    *history, final = messages
    prompt = render_prompt(tools, history)
    assert apply_template(history, tools, add_generation_prompt=True) == prompt
    assert apply_template(messages, tools, add_generation_prompt=False) == prompt + render_completion(final)



def test_template_reproduces_golden_rows(golden_case):
    row, expected = golden_case
    *history, _ = row["messages"]
    assert apply_template(history, row["tools"], add_generation_prompt=True) == expected["prompt"]
    assert (
        apply_template(row["messages"], row["tools"], add_generation_prompt=False)
        == expected["prompt"] + expected["completion"]
    )
    assert render_row(row) == expected


def test_template_multi_turn_matches_module():
    tools = [
        {
            "name": "get_weather",
            "description": "W.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    messages = [
        {"role": "system", "content": "Sys. "},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            ],
        },
        {
            "role": "tool",
            "content": [
                {"name": "get_weather", "response": {"temp": -3.5}},
                {"name": "get_weather", "response": "rain"},
            ],
        },
        {"role": "assistant", "content": "Cold in Oslo, rain in Rome."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome."},
    ]
    assert_same_as_module(tools, messages)
    assert apply_template(messages[:4], tools, add_generation_prompt=True).endswith("<end_function_response>")


@pytest.mark.parametrize(
    "messages, add_generation_prompt",
    [
        ([{"role": "tool", "name": "f", "content": "r"}], False),
        ([{"role": "assistant", "tool_calls": [{"name": "f"}]}, {"role": "user", "content": "Q"}], False),
        ([{"role": "assistant", "tool_calls": [{"name": "f"}]}], True),
        ([{"role": "assistant", "tool_calls": [{"name": "f", "arguments": '{"a": 1}'}]}], False),
    ],
    ids=[
        "tool_first",
        "call_without_response",
        "prompt_after_call",
        "json_string_arguments",
    ],
)
def test_template_refuses_what_the_module_refuses(messages, add_generation_prompt):
    with pytest.raises(jinja2.TemplateError):
        apply_template(messages, [], add_generation_prompt)
    if add_generation_prompt:
        with pytest.raises(ValueError):
            render_prompt([], messages)
    elif messages[-1].get("tool_calls") and isinstance(messages[-1]["tool_calls"][0].get("arguments"), str):
        render_conversation(
            [], messages
        )  # the module decodes JSON-string arguments; the template asks for objects
    else:
        with pytest.raises(ValueError):
            render_conversation([], messages)


def test_content_as_text_parts_renders_as_the_joined_text():
    """LiteRT-LM hands the bundle's template each message's content as [{type: text, text}] parts; the
    prompt must be the one our rows (whose parts the row reader joins) render from the plain text."""
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    plain = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Turn it on"}]
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Turn "}, {"type": "text", "text": "it on"}]},
    ]
    assert apply_template(parts, tools, add_generation_prompt=True) == render_prompt(tools, plain)


# --------------------------------------------------------------------------- random conversations

KEYS = st.text("abcxyzABC_", min_size=1, max_size=4)  # mixed case: both sides sort like dictsort
TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
LEAF_SCHEMA = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "STRING", "number", "integer", "boolean"])},
    optional={
        "description": TEXT,
        "enum": st.lists(TEXT, max_size=3),
        "default": SCALARS,
        "nullable": st.booleans(),
    },
)
SCHEMAS = st.recursive(
    LEAF_SCHEMA,
    lambda inner: (
        st.fixed_dictionaries({"type": st.just("array"), "items": inner}, optional={"description": TEXT})
        | st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(KEYS, inner, max_size=3)},
            optional={"required": st.lists(KEYS, max_size=2)},
        )
    ),
    max_leaves=4,
)


@st.composite
def tools(draw) -> dict:
    properties = draw(st.dictionaries(KEYS, SCHEMAS, max_size=3))
    parameters = {"type": draw(st.sampled_from(["object", "OBJECT"])), "properties": properties}
    if properties and draw(st.booleans()):
        parameters["required"] = draw(st.permutations(list(properties)))[
            : draw(st.integers(1, len(properties)))
        ]
    fn = {
        "name": draw(st.from_regex(r"[a-z_]{1,10}", fullmatch=True)),
        "description": draw(TEXT),
        "parameters": parameters,
    }
    if draw(st.booleans()):
        fn["return"] = {"type": "string"}
    style = draw(st.sampled_from(["openai", "function", "bare"]))
    return (
        {"type": "function", "function": fn}
        if style == "openai"
        else {"function": fn}
        if style == "function"
        else fn
    )


@st.composite
def assistant_calls(draw, content: bool = True) -> dict:
    calls = []
    for _ in range(draw(st.integers(1, 3))):
        fn = {
            "name": draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
            "arguments": draw(st.dictionaries(KEYS, JSON_VALUES, max_size=3)),
        }
        calls.append({"type": "function", "function": fn} if draw(st.booleans()) else {"function": fn})
    message = {"role": "assistant", "tool_calls": calls}
    if content and draw(st.booleans()):
        message["content"] = draw(TEXT)
    return message


@st.composite
def tool_message(draw) -> dict:
    name = draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True))
    response = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=3) | JSON_VALUES)
    shape = draw(st.sampled_from(["dict", "list", "named"]))
    if shape == "dict":
        return {"role": "tool", "content": {"name": name, "response": response}}
    if shape == "list":
        return {"role": "tool", "content": [{"name": name, "response": response}] * draw(st.integers(1, 2))}
    return {"role": "tool", "name": name, "content": response}


@st.composite
def conversations(draw) -> tuple[list[dict], list[dict]]:
    messages = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["developer", "system"])), "content": draw(TEXT)})
    messages.append({"role": "user", "content": draw(TEXT)})
    kind = draw(st.sampled_from(["call", "text", "after_tool", "second_round"]))
    if kind in ("after_tool", "second_round"):
        messages += [draw(assistant_calls()), draw(tool_message())]
        if kind == "second_round":
            messages += [
                {"role": "assistant", "content": draw(TEXT)},
                {"role": "user", "content": draw(TEXT)},
            ]
    if kind == "text" or kind == "after_tool":
        messages.append({"role": "assistant", "content": draw(TEXT)})
    else:
        messages.append(draw(assistant_calls()))
    return draw(st.lists(tools(), max_size=3)), messages


@settings(max_examples=150, deadline=None, database=None)
@given(conversations())
def test_template_matches_module_on_random_conversations(conversation):
    tools_, messages = conversation
    assert_same_as_module(tools_, messages)
