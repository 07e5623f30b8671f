"""Unit and property tests for pipeline/functiongemma.py (the FunctionGemma format).

.venv/bin/python -m pytest -q tests/test_functiongemma.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.functiongemma import (
    END_CALL,
    END_OF_TURN,
    EOS,
    ESCAPE,
    FUNCTION_TOKENS,
    START_CALL,
    START_RESPONSE,
    STOP_TOKENS,
    Call,
    ParsedOutput,
    calls_from_message,
    parse_output,
    render_call,
    render_completion,
    render_conversation,
    render_declaration,
    render_prompt,
    render_row,
    render_tool_response,
    render_value,
    unwrap_tool,
)

PROPERTY = settings(max_examples=150, deadline=None, database=None)

E = ESCAPE  # short alias for hand-written expected strings
DEV = "You are a model that can do function calling with the following functions"


def _tool(name="f", description="D.", **parameters) -> dict:
    return {"function": {"name": name, "description": description, "parameters": parameters}}


def _decl(name: str, body: str) -> str:
    return f"<start_function_declaration>declaration:{name}{{{body}}}<end_function_declaration>"


# --------------------------------------------------------------------------- golden fixtures


def test_golden_rows_render_byte_for_byte(golden_case):
    row, expected = golden_case
    assert render_row(row) == expected


def test_golden_completions_parse_back_to_the_rows_calls(golden_case):
    row, expected = golden_case
    parsed = parse_output(expected["completion"])
    assert parsed == ParsedOutput(calls_from_message(row["messages"][-1]), "", False)


SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="no ../shared beside the repository (a user's clone)")
@pytest.mark.parametrize("name", ["functiongemma_golden_rows.jsonl", "functiongemma_golden_expected.json"])
def test_committed_golden_fixtures_are_the_teams_shared_ones(name):
    """tests/fixtures holds the team's golden rows; where ../shared is beside the clone, the two copies agree."""
    committed = Path(__file__).parent / "fixtures" / name
    assert committed.read_bytes() == (SHARED_FIXTURES / name).read_bytes(), f"tests/fixtures/{name} differs from ../shared"


# --------------------------------------------------------------------------- prompt rules


def test_developer_text_is_trimmed_and_declarations_follow_without_separator():
    prompt = render_prompt(
        [_tool("f")], [{"role": "developer", "content": "  Hi there\n"}, {"role": "user", "content": " Q \n"}]
    )
    assert prompt == (
        "<bos><start_of_turn>developer\nHi there"
        + _decl("f", f"description:{E}D.{E},parameters:{{type:{E}OBJECT{E}}}")
        + "<end_of_turn>\n<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    )


def test_system_message_renders_as_the_developer_turn():
    messages = [{"role": "system", "content": DEV}, {"role": "user", "content": "Q"}]
    assert (
        render_prompt([], messages) == f"<bos><start_of_turn>developer\n{DEV}<end_of_turn>\n"
        "<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    )


def test_tools_without_developer_message_open_a_developer_turn_with_only_declarations():
    prompt = render_prompt([_tool("f")], [{"role": "user", "content": "Q"}])
    assert prompt.startswith("<bos><start_of_turn>developer\n<start_function_declaration>declaration:f{")
    assert (
        render_prompt([], [{"role": "user", "content": "Q"}])
        == "<bos><start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    )


def test_tools_keep_row_order():
    prompt = render_prompt([_tool("zeta"), _tool("alpha"), _tool("mid")], [{"role": "user", "content": "Q"}])
    assert [prompt.index(f"declaration:{n}{{") for n in ("zeta", "alpha", "mid")] == sorted(
        prompt.index(f"declaration:{n}{{") for n in ("zeta", "alpha", "mid")
    )


def test_parameters_keys_and_properties_are_sorted():
    tool = _tool(
        type="OBJECT",
        required=["b"],
        properties={"b": {"type": "STRING", "description": "B"}, "a": {"description": "A", "type": "STRING"}},
    )
    assert render_declaration(tool) == _decl(
        "f",
        f"description:{E}D.{E},parameters:{{properties:{{a:{{description:{E}A{E},type:{E}STRING{E}}},"
        f"b:{{description:{E}B{E},type:{E}STRING{E}}}}},required:[{E}b{E}],type:{E}OBJECT{E}}}",
    )


def test_property_fields_are_sorted_description_enum_items_type():
    prop = {"type": "array", "items": {"type": "string"}, "enum": [["x"]], "description": "L"}
    assert render_declaration(_tool(type="object", properties={"l": prop})) == _decl(
        "f",
        f"description:{E}D.{E},parameters:{{properties:{{l:{{description:{E}L{E},enum:[[{E}x{E}]],"
        f"items:{{type:{E}STRING{E}}},type:{E}ARRAY{E}}}}},type:{E}OBJECT{E}}}",
    )


def test_required_keeps_row_order():
    tool = _tool(
        type="OBJECT",
        properties={"subject": {"type": "STRING"}, "to": {"type": "STRING"}},
        required=["to", "subject"],
    )
    assert f"required:[{E}to{E},{E}subject{E}]" in render_declaration(tool)


@pytest.mark.parametrize(
    "tool",
    [
        _tool(type="OBJECT", properties={}),
        _tool(type="object", properties={}, required=[]),
        {"name": "f", "description": "D."},
        {"name": "f", "description": "D.", "parameters": None},
    ],
    ids=["empty_properties", "empty_required", "no_parameters_key", "null_parameters"],
)
def test_tool_without_parameters_renders_type_object_only(tool):
    assert render_declaration(tool) == _decl("f", f"description:{E}D.{E},parameters:{{type:{E}OBJECT{E}}}")


def test_type_names_are_upper_cased_at_every_level():
    tool = _tool(
        type="object",
        properties={"xs": {"type": "array", "items": {"type": "integer"}}, "n": {"type": ["number", "null"]}},
    )
    text = render_declaration(tool)
    assert f"items:{{type:{E}INTEGER{E}}},type:{E}ARRAY{E}" in text
    assert f"n:{{type:[{E}NUMBER{E},{E}NULL{E}]}}" in text
    assert f"type:{E}OBJECT{E}" in text and "object" not in text


def test_enum_values_are_escaped_and_keep_their_case_and_order():
    tool = _tool(type="OBJECT", properties={"unit": {"type": "STRING", "enum": ["fahrenheit", "Celsius"]}})
    assert f"unit:{{enum:[{E}fahrenheit{E},{E}Celsius{E}],type:{E}STRING{E}}}" in render_declaration(tool)


def test_nested_object_properties_sort_and_keep_required_order():
    inner = {
        "type": "object",
        "properties": {"zip": {"type": "string"}, "city": {"type": "string"}},
        "required": ["zip", "city"],
    }
    text = render_declaration(_tool(type="object", properties={"address": inner}))
    assert (
        f"address:{{properties:{{city:{{type:{E}STRING{E}}},zip:{{type:{E}STRING{E}}}}},"
        f"required:[{E}zip{E},{E}city{E}],type:{E}OBJECT{E}}}"
    ) in text


def test_declaration_numbers_bools_and_null_are_bare():
    prop = {"type": "integer", "minimum": 0, "maximum": 2.5, "nullable": True, "default": None}
    text = render_declaration(_tool(type="object", properties={"n": prop}))
    assert f"n:{{maximum:2.5,minimum:0,nullable:true,type:{E}INTEGER{E}}}" in text  # null default dropped


def test_only_description_and_parameters_are_rendered():
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "D.",
            "parameters": {"type": "object"},
            "return": {"type": "string"},
            "strict": True,
        },
    }
    assert render_declaration(tool) == _decl("f", f"description:{E}D.{E},parameters:{{type:{E}OBJECT{E}}}")


def test_wrapped_and_bare_tools_render_alike():
    bare = {
        "name": "f",
        "description": "D.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    assert unwrap_tool({"type": "function", "function": bare}) is bare
    assert (
        render_declaration(bare)
        == render_declaration({"function": bare})
        == render_declaration({"type": "function", "function": bare})
    )


def test_every_string_is_escaped_including_special_characters():
    tool = _tool(description='Uses {braces}, "quotes": and\nnewlines — ü', type="object")
    assert f'description:{E}Uses {{braces}}, "quotes": and\nnewlines — ü{E}' in render_declaration(tool)


# --------------------------------------------------------------------------- values and completions


@pytest.mark.parametrize(
    "value, text",
    [
        ("s", f"{E}s{E}"),
        (15, "15"),
        (-2, "-2"),
        (1.5, "1.5"),
        (1e16, "1e+16"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ([1, "a", [None]], f"[1,{E}a{E},[null]]"),
        ({"b": 1, "a": {"y": False, "x": []}}, "{a:{x:[],y:false},b:1}"),
    ],
)
def test_render_value(value, text):
    assert render_value(value) == text


def test_call_arguments_are_sorted_and_nested():
    call = Call(
        "f", {"title": "T", "datetime": "2026-01-20T15:00:00", "tags": ["a", 2], "opts": {"z": 1, "a": None}}
    )
    assert render_call(call) == (
        f"{START_CALL}call:f{{datetime:{E}2026-01-20T15:00:00{E},opts:{{a:null,z:1}},"
        f"tags:[{E}a{E},2],title:{E}T{E}}}{END_CALL}"
    )


def test_multi_call_completion_ends_with_one_function_response_token():
    message = {
        "role": "assistant",
        "tool_calls": [
            {"function": {"name": "a", "arguments": {}}},
            {"function": {"name": "b", "arguments": {"x": 1}}},
        ],
    }
    assert (
        render_completion(message)
        == f"{START_CALL}call:a{{}}{END_CALL}{START_CALL}call:b{{x:1}}{END_CALL}{START_RESPONSE}"
    )


def test_text_answer_is_trimmed_and_ends_the_turn():
    assert (
        render_completion({"role": "assistant", "content": "  It is sunny.\n"})
        == "It is sunny.<end_of_turn>\n"
    )


def test_tool_response_renders_sorted_fields_or_a_value():
    assert render_tool_response("get_weather", {"weather": "sunny", "temperature": 15}) == (
        f"{START_RESPONSE}response:get_weather{{temperature:15,weather:{E}sunny{E}}}<end_function_response>"
    )
    assert (
        render_tool_response("f", "done")
        == f"{START_RESPONSE}response:f{{value:{E}done{E}}}<end_function_response>"
    )


def test_calls_from_message_accepts_wrappers_and_json_string_arguments():
    message = {
        "tool_calls": [
            {"type": "function", "function": {"name": "a", "arguments": '{"x": [1, "y"]}'}},
            {"function": {"name": "b"}},
            {"name": "c", "arguments": {"k": None}},
        ]
    }
    assert calls_from_message(message) == [Call("a", {"x": [1, "y"]}), Call("b", {}), Call("c", {"k": None})]


# --------------------------------------------------------------------------- multi-turn


def _weather_conversation() -> tuple[list[dict], list[dict]]:
    """Google's "Full function calling sequence with FunctionGemma" example."""
    tool = {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Gets the current weather in a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": 'The city and state, e.g. "San Francisco, CA" or "Tokyo, JP"',
                    },
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "description": "The unit to return the temperature in.",
                    },
                },
                "required": ["location"],
            },
        },
    }
    messages = [
        {"role": "developer", "content": DEV},
        {"role": "user", "content": "Hey, what's the weather in Tokyo right now?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": {"location": "Tokyo, Japan"}},
                }
            ],
        },
        {
            "role": "tool",
            "content": [{"name": "get_current_weather", "response": {"temperature": 15, "weather": "sunny"}}],
        },
        {
            "role": "assistant",
            "content": "The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius.",
        },
    ]
    return [tool], messages


# The notebook's printed full history (its doc page adds a space inside "}}", removed here).
NOTEBOOK_HISTORY = (
    f"<bos><start_of_turn>developer\n{DEV}<start_function_declaration>declaration:get_current_weather"
    f"{{description:{E}Gets the current weather in a given location.{E},parameters:{{properties:{{location:"
    f'{{description:{E}The city and state, e.g. "San Francisco, CA" or "Tokyo, JP"{E},type:{E}STRING{E}}},'
    f"unit:{{description:{E}The unit to return the temperature in.{E},enum:[{E}celsius{E},{E}fahrenheit{E}],"
    f"type:{E}STRING{E}}}}},required:[{E}location{E}],type:{E}OBJECT{E}}}}}<end_function_declaration><end_of_turn>\n"
    "<start_of_turn>user\nHey, what's the weather in Tokyo right now?<end_of_turn>\n<start_of_turn>model\n"
    f"{START_CALL}call:get_current_weather{{location:{E}Tokyo, Japan{E}}}{END_CALL}"
    f"{START_RESPONSE}response:get_current_weather{{temperature:15,weather:{E}sunny{E}}}<end_function_response>"
    "The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius.<end_of_turn>"
)


def test_multi_turn_matches_googles_published_full_sequence():
    tools, messages = _weather_conversation()
    assert render_conversation(tools, messages) == (NOTEBOOK_HISTORY + "\n", "")
    row = render_row({"tools": tools, "messages": messages})
    assert row["prompt"].endswith(
        "<end_function_response>"
    )  # the model turn stays open: no new <start_of_turn>model
    assert row["prompt"] + row["completion"] == NOTEBOOK_HISTORY + "\n"


@pytest.mark.parametrize(
    "tool_message",
    [
        {
            "role": "tool",
            "content": {"name": "get_current_weather", "response": {"temperature": 15, "weather": "sunny"}},
        },
        {"role": "tool", "name": "get_current_weather", "content": {"temperature": 15, "weather": "sunny"}},
    ],
    ids=["content_dict", "openai_name"],
)
def test_tool_message_shapes_render_alike(tool_message):
    tools, messages = _weather_conversation()
    assert render_prompt(tools, messages[:3] + [tool_message]) == render_prompt(tools, messages[:4])


# --------------------------------------------------------------------------- row errors


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"tools": []}, "no 'messages'"),
        ({"messages": [{"role": "user", "content": "Q"}]}, "last message"),
        ({"messages": [{"role": "assistant", "content": "  "}]}, "neither tool_calls nor content"),
        (
            {
                "tools": [{"function": {"description": "x"}}],
                "messages": [{"role": "assistant", "content": "A"}],
            },
            "'name'",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}
                ]
            },
            "not valid JSON",
        ),
        (
            {
                "messages": [
                    {"role": "tool", "name": "f", "content": "r"},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "must follow",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"name": "f"}]},
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "followed by 'tool'",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"name": "f"}]},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "no 'tool' response",
        ),
        (
            {"messages": [{"role": "user", "content": ["parts"]}, {"role": "assistant", "content": "A"}]},
            "must be a string",
        ),
        ({"messages": ["hello", {"role": "assistant", "content": "A"}]}, "string 'role'"),
    ],
)
def test_render_row_rejects_unrenderable_rows_with_a_reason(row, reason):
    with pytest.raises(ValueError, match=reason):
        render_row(row)


# --------------------------------------------------------------------------- parser


def test_parse_text_answer():
    assert parse_output("  The answer is 4.<end_of_turn>\n<eos>") == ParsedOutput(
        [], "The answer is 4.", False
    )


def test_parse_stops_at_the_first_stop_token_outside_a_call():
    text = f"{START_CALL}call:f{{a:{E}x<end_of_turn>{E}}}{END_CALL}{START_RESPONSE}response:f{{}}junk"
    assert parse_output(text) == ParsedOutput([Call("f", {"a": "x<end_of_turn>"})], "", False)
    assert STOP_TOKENS == (START_RESPONSE, END_OF_TURN, EOS)


def test_parse_values_of_every_kind():
    args = f'a:-1.5e-3,b:[1,[true,false],null],c:{{d:{E},{{}}:\n"ü{E}}},e:{{}},f:[]'
    text = f"{START_CALL}call:f{{{args}}}{END_CALL}"
    assert parse_output(text).calls == [
        Call("f", {"a": -0.0015, "b": [1, [True, False], None], "c": {"d": ',{}:\n"ü'}, "e": {}, "f": []})
    ]


def test_parse_tolerates_escaped_keys():
    assert parse_output(f"{START_CALL}call:f{{x:{{{E}k{E}:1}}}}{END_CALL}").calls == [
        Call("f", {"x": {"k": 1}})
    ]


def test_parse_keeps_text_before_calls():
    assert parse_output(f"Sure. {START_CALL}call:f{{}}{END_CALL}{START_RESPONSE}") == ParsedOutput(
        [Call("f", {})], "Sure.", False
    )


@pytest.mark.parametrize(
    "text, reason",
    [
        (f"{START_CALL}call:f{{a:{E}x}}{END_CALL}", "unbalanced <escape>"),
        (f"{START_CALL}call:f{{a:{E}x{E}", "truncated call"),
        (f"{START_CALL}call:f{{a:maybe}}{END_CALL}", "bad value"),
        (f"{START_CALL}call:f{{a:1 b:2}}{END_CALL}", "expected ','"),
        (f"{START_CALL}call:f{{a}}{END_CALL}", "bad key"),
        (f"{START_CALL}call:f{{a:1}}}}{END_CALL}", "expected <end_function_call>"),
        (f"{START_CALL}f{{a:1}}{END_CALL}", "expected 'call:'"),
        (f"{START_CALL}call:bad name{{}}{END_CALL}", "bad function name"),
        (f"{START_CALL}call:f{{a:{'[' * 500}{END_CALL}", "nesting too deep"),
        (f"{START_CALL}call:f{{a:{'9' * 5000}}}{END_CALL}", "bad number"),
        (f"oops {END_CALL}", "stray function token"),
    ],
)
def test_parse_flags_malformed_calls(text, reason):
    parsed = parse_output(text)
    assert parsed.malformed and reason in parsed.error and parsed.calls == []


def test_parse_keeps_good_calls_around_a_bad_one_and_flags_junk_between_calls():
    good = render_call(Call("g", {"x": 1}))
    parsed = parse_output(f"{good}{START_CALL}call:f{{a:?}}{END_CALL}{good}{START_RESPONSE}")
    assert parsed.calls == [Call("g", {"x": 1})] * 2 and parsed.malformed
    parsed = parse_output(f"{good} and then {good}{START_RESPONSE}")
    assert parsed.calls == [Call("g", {"x": 1})] * 2 and parsed.malformed and "between" in parsed.error


def test_parse_never_raises_on_non_text():
    assert parse_output(b"\x00\xff").malformed  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)
TRICKY = st.sampled_from(
    [
        ",",
        "{",
        "}",
        ":",
        '"',
        "'",
        "\n",
        "[",
        "]",
        "<",
        ">",
        "ü",
        "日本",
        "—",
        " ",
        "\\",
        "<end_of_turn>",
        "<start_function_call>",
    ]
)
STRINGS = st.lists(st.text(max_size=4) | TRICKY, max_size=6).map("".join).filter(lambda s: ESCAPE not in s)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | STRINGS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
CALLS = st.builds(Call, KEYS, st.dictionaries(KEYS, JSON_VALUES, max_size=4))


@PROPERTY
@given(st.lists(CALLS, min_size=1, max_size=3))
def test_rendered_calls_parse_back(calls):
    message = {
        "role": "assistant",
        "tool_calls": [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls],
    }
    assert parse_output(render_completion(message)) == ParsedOutput(calls, "", False)
    assert parse_output("".join(map(render_call, calls)) + START_RESPONSE).calls == calls


SOUP = st.lists(
    st.sampled_from(
        [
            *FUNCTION_TOKENS.values(),
            *STOP_TOKENS,
            "call:",
            "f",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "1",
            "-",
            ".",
            "e",
            "true",
            "null",
            " ",
            "x",
        ]
    )
    | st.text(max_size=3),
    max_size=40,
).map("".join)


@PROPERTY
@given(st.text() | SOUP)
def test_parse_output_never_raises(text):
    parsed = parse_output(text)
    assert (
        isinstance(parsed, ParsedOutput)
        and isinstance(parsed.text, str)
        and isinstance(parsed.malformed, bool)
    )
    assert all(isinstance(c, Call) for c in parsed.calls)
    assert not any(token in parsed.text for token in STOP_TOKENS)


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(CALLS, min_size=1, max_size=3))
def test_every_truncation_is_safe_and_flags_a_cut_call(calls):
    pieces = [render_call(c) for c in calls]
    full = "".join(pieces) + START_RESPONSE
    spans, start = [], 0
    for piece in pieces:
        spans.append((start, start + len(piece)))
        start += len(piece)
    for cut in range(len(full) + 1):
        parsed = parse_output(full[:cut])
        complete = sum(end <= cut for _, end in spans)
        assert parsed.calls == calls[:complete]
        # A cut inside a call is flagged, except inside the very first <start_function_call>
        # (character-level only: a tokenizer never splits that token).
        if any(s < cut < e for s, e in spans) and cut >= len(START_CALL):
            assert parsed.malformed, full[:cut]
