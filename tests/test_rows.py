"""pipeline/rows.py: each row shape detected and normalized into the one internal row; every problem named."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import functiongemma as fg
from pipeline import rows
from tests.helpers import json_values, replace_somewhere

DEV = "You are a model that can do function calling with the following functions"


def normalized(obj, schema="auto", developer_text=DEV):
    result = rows.normalize_row(obj, schema, developer_text)
    assert result.errors == [], result.errors
    assert rows.validate_row(result.row) == []
    return result


@pytest.mark.parametrize("shape", ["mobile_actions", "openai", "xlam"])
def test_each_shape_is_detected_and_renders(own_rows, shape):
    for row in own_rows[shape]:
        result = normalized(row)
        assert result.shape == shape
        rendered = fg.render_row(result.row)
        assert rendered["prompt"].startswith("<bos><start_of_turn>developer\n")
        assert rendered["completion"].endswith(fg.START_RESPONSE)
        # named explicitly, the same row gives the same internal row
        assert normalized(row, schema=shape).row == result.row


def test_the_three_shapes_of_one_request_render_the_same_completion(row_builders):
    calls = [("turn_on_light", {"room": "kitchen"})]
    completions = {fg.render_row(normalized(build("Kitchen light on", calls)).row)["completion"]
                   for build in row_builders.values()}
    assert completions == {"<start_function_call>call:turn_on_light{room:<escape>kitchen<escape>}<end_function_call>"
                           "<start_function_response>"}


def test_a_mobile_actions_row_is_its_own_internal_row(own_rows):
    row = own_rows["mobile_actions"][0]
    assert normalized(row).row == row


def test_openai_row_complete():
    """system message, "type": "function" tools, JSON-text arguments, tool results by tool_call_id, content parts."""
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "City."}}, "required": ["city"]}}}]
    row = {"tools": json.dumps(tools), "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": '{"temp_c": -3}'},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_10", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Bergen"}}}]}]}
    result = normalized(row)
    assert result.shape == "openai"
    prompt = fg.render_row(result.row)["prompt"]
    assert prompt.startswith("<bos><start_of_turn>developer\nBe brief.<start_function_declaration>")
    assert "<start_of_turn>user\nWeather in Oslo?<end_of_turn>" in prompt
    assert prompt.endswith("<start_function_call>call:get_weather{city:<escape>Oslo<escape>}<end_function_call>"
                           "<start_function_response>response:get_weather{temp_c:-3}<end_function_response>")
    assert fg.calls_from_message(result.row["messages"][-1]) == [fg.Call("get_weather", {"city": "Bergen"})]
    assert row["messages"][3] == {"role": "tool", "tool_call_id": "call_9", "content": '{"temp_c": -3}'}  # input kept


def test_openai_tool_result_with_an_unknown_id_is_named():
    row = {"tools": [], "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"},
                                     {"role": "assistant", "content": "ok"}]}
    assert any("tool_call_id 'x' matches no earlier tool call" in e for e in rows.normalize_row(row).errors)


@pytest.mark.parametrize("text, schema, optional", [
    ("str", {"type": "STRING"}, False),
    ("int", {"type": "INTEGER"}, False),
    ("float", {"type": "NUMBER"}, False),
    ("bool", {"type": "BOOLEAN"}, False),
    ("List[int]", {"type": "ARRAY", "items": {"type": "INTEGER"}}, False),
    ("list", {"type": "ARRAY"}, False),
    ("List[List[str]]", {"type": "ARRAY", "items": {"type": "ARRAY", "items": {"type": "STRING"}}}, False),
    ("Dict[str, Any]", {"type": "OBJECT"}, False),
    ("dict", {"type": "OBJECT"}, False),
    ("str, optional", {"type": "STRING"}, True),
    ("List[str], optional", {"type": "ARRAY", "items": {"type": "STRING"}}, True),
    ("Optional[int]", {"type": "INTEGER"}, True),
    ("int | None", {"type": "INTEGER"}, True),
    ("int, default=100", {"type": "INTEGER"}, True),
    ("Union[int, float]", {"type": "NUMBER"}, False),
    ("Tuple[float, float]", {"type": "ARRAY", "items": {"type": "NUMBER"}}, False),
    ("Literal['asc', 'desc']", {"type": "STRING", "enum": ["asc", "desc"]}, False),
    ("Any", {}, False),
    ("Callable", {}, False),
    ("", {}, False),
])
def test_xlam_type_names(text, schema, optional):
    assert rows.xlam_type(text) == (schema, optional)


def test_xlam_parameters_required_defaults_and_descriptions():
    params = {"city": {"type": "str", "description": "City name.", "default": ""},   # "" = no default: required
              "days": {"type": "int", "description": "Days ahead.", "default": 3},     # a default: optional
              "units": {"type": "str, optional", "description": "Units.", "default": "metric"},
              "type": {"type": "str", "description": "A parameter called type."}}
    errors = []
    schema = rows.xlam_parameters(params, "tools[0]", errors)
    assert errors == []
    assert schema == {"type": "OBJECT", "required": ["city", "type"], "properties": {
        "city": {"description": "City name.", "type": "STRING"},
        "days": {"description": 'Days ahead. (default: 3)', "type": "INTEGER"},
        "units": {"description": 'Units. (default: "metric")', "type": "STRING"},
        "type": {"description": "A parameter called type.", "type": "STRING"}}}


def test_xlam_row_takes_the_developer_text_given():
    row = {"query": "Weather in Oslo", "tools": '[{"name": "w", "description": "W.", "parameters": {"c": {"type": "str"}}}]',
           "answers": '[{"name": "w", "arguments": {"c": "Oslo"}}]'}
    result = normalized(row, developer_text="Custom line.")
    assert result.row["messages"][0] == {"role": "developer", "content": "Custom line."}
    assert fg.render_row(result.row)["prompt"].startswith("<bos><start_of_turn>developer\nCustom line.<start_function_declaration>")


def test_a_row_of_no_shape_names_the_shapes_tried():
    errors = rows.normalize_row({"conversations": []}).errors
    assert errors == ["fits no row shape (tried mobile_actions: no 'messages' list; openai: no 'messages' list; "
                      "xlam: no 'query' and 'answers')"]
    assert "does not fit data.schema 'xlam'" in rows.normalize_row({"messages": []}, "xlam").errors[0]
    assert "(an openai row)" in rows.normalize_row({"tools": [{"type": "function", "function": {"name": "x"}}],
                                                    "messages": []}, "mobile_actions").errors[0]


def test_json_text_fields_are_decoded_or_named():
    tools = [{"function": {"name": "f", "parameters": '{"type": "OBJECT", "properties": {}}'}}]
    row = {"tools": json.dumps(tools), "messages": json.dumps([{"role": "user", "content": "go"},
                                                               {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}])}
    result = normalized(row)
    assert result.row["tools"] == [{"function": {"name": "f", "parameters": {"type": "OBJECT", "properties": {}}}}]
    assert rows.normalize_row({"tools": "[{broken", "messages": []}).errors[0].startswith("'tools' holds JSON text that cannot be read")


def test_null_properties_added_by_a_unifying_loader_are_not_rendered():
    """A tool renders only the properties it declares, not every other tool's as nulls."""
    tool = {"function": {"name": "f", "parameters": {"type": "OBJECT", "properties": {
        "a": {"type": "STRING"}, "other_tools_b": None, "other_tools_c": None}}}}
    row = {"tools": [tool], "messages": [{"role": "user", "content": "go"},
                                         {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": "x"}}}]}]}
    prompt = fg.render_row(normalized(row).row)["prompt"]
    assert "properties:{a:{type:<escape>STRING<escape>}}" in prompt and "other_tools" not in prompt


def base_row(**changes) -> dict:
    row = {"tools": [{"function": {"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}}],
           "messages": [{"role": "developer", "content": DEV}, {"role": "user", "content": "go"},
                        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": "x"}}}]}]}
    row.update(changes)
    return row


def nested(depth: int):
    value = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["messages"][1].update(content=None), "messages[1] (user): content must be text, got null"),
    (lambda r: r["messages"][1].update(content=["go"]), "messages[1] (user): content must be text, got list"),
    (lambda r: r["messages"][1].update(content=" "), "messages[1] (user): content is empty"),
    (lambda r: r["messages"][0].update(content=None), "messages[0] (developer): content must be text, got null"),
    (lambda r: r["messages"][0].update(content={"a": 1}), "messages[0] (developer): content must be text, got object"),
    (lambda r: r["messages"][2].update(content=7), "messages[2] (assistant): content must be text or null"),
    (lambda r: r["tools"][0]["function"]["parameters"].update(type=["object", "null"]),
     "parameters.type must be a type name"),
    (lambda r: r["tools"][0]["function"]["parameters"]["properties"]["a"].update(type=5),
     "parameters.properties.a.type must be a type name such as \"string\", got integer"),
    (lambda r: r["tools"][0]["function"]["parameters"]["properties"].update(b="STRING"),
     "parameters.properties.b must be an object schema"),
    (lambda r: r["tools"][0]["function"].update(description=3), "description must be text"),
    (lambda r: r["tools"][0]["function"].update(name="f x"), "cannot be called back"),
    (lambda r: r["messages"][1].update(content="say <end_of_turn> now"), "control token '<end_of_turn>'"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments={"a": nested(70)}),
     "arguments nested deeper than 64 levels"),
    (lambda r: r["tools"][0]["function"]["parameters"]["properties"]["a"].update(items=nested(120)),
     "nested deeper than 100 levels"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments={"a:b": "x"}), "cannot be parsed back"),
    (lambda r: r["messages"][1].update(content="\ud800"), "unpaired UTF-16 surrogate"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments={"a": float("nan")}), "holds the number nan"),
    (lambda r: r.update(metadata="test"), "metadata must be 'train' or 'eval'"),
])
def test_each_class_of_bad_row_is_named(change, reason):
    row = base_row()
    change(row)
    errors = rows.validate_row(rows.normalize_row(row).row or row)
    assert any(reason in e for e in errors), errors


def test_assistant_with_tool_calls_and_null_content_is_valid():
    row = base_row()
    row["messages"][2]["content"] = None
    assert rows.validate_row(row) == []
    row["metadata"] = None  # a null split (a Parquet column without a value) is no split
    assert rows.validate_row(row) == []


def test_nesting_within_the_limits_is_valid():
    row = base_row()
    row["tools"][0]["function"]["parameters"]["properties"]["a"] = {"type": "OBJECT"}
    row["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"a": nested(60)}
    assert rows.validate_row(row) == []
    assert fg.parse_output(fg.render_row(row)["completion"]).calls[0].arguments == {"a": nested(60)}


@pytest.mark.parametrize("text, problem", [
    ('{"a": NaN}', "NaN is not a JSON value"),
    ('{"a": 1e999}', "holds the number inf"),
    ("[" * 100_000, "nested deeper than"),
    ('{"a": ' + "1" * 5000 + "}", "invalid JSON"),
    ('{"a": "\\udc00"}', "unpaired UTF-16 surrogate"),
    ("{\n\"a\" 1}", "at line 2 column 5"),
])
def test_loads_json_never_raises(text, problem):
    value, error = rows.loads_json(text)
    assert value is None and problem in error


def test_deep_text_is_never_parsed_even_when_the_recursion_limit_is_raised():
    """Some libraries raise the recursion limit; json.loads would then overflow the C stack and crash."""
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)
    try:
        assert rows.loads_json("[" * 2_000_000) == (None, "nested deeper than 100 levels")
        assert rows.loads_json('{"a": "' + "[" * 500 + '"}') == ({"a": "[" * 500}, "")  # brackets inside a string
    finally:
        sys.setrecursionlimit(old)
    assert rows.text_nesting("[" * 101 + "]" * 101) == 101 and rows.text_nesting('["[[["]') == 0


def test_request_key_folds_case_and_spacing():
    a = [{"role": "user", "content": "Turn on  the\tLight "}]
    b = [{"role": "user", "content": "turn on the light"}]
    assert rows.request_key(a) == rows.request_key(b) != rows.request_key([{"role": "user", "content": "turn off the light"}])


# ---------------------------------------------------------------- property: any JSON value gets a verdict, never an exception

JSON_VALUES = json_values()


@st.composite
def mutated(draw, rows_by_shape):
    """A row of any shape (JSON-text fields decoded or not) with one value inside replaced by a random JSON value."""
    shape = draw(st.sampled_from(sorted(rows_by_shape)))
    row = copy.deepcopy(draw(st.sampled_from(rows_by_shape[shape])))
    if shape == "xlam" and draw(st.booleans()):
        row = {k: json.loads(v) if k in ("tools", "answers") else v for k, v in row.items()}
    replace_somewhere(draw, row, max_depth=8)
    return row


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_row_gets_a_verdict_and_valid_rows_render(own_rows, data):
    obj = data.draw(st.one_of(JSON_VALUES, mutated(own_rows)))
    schema = data.draw(st.sampled_from(rows.SCHEMAS))
    result = rows.normalize_row(obj, schema, DEV)
    assert (result.row is None) == bool(result.errors)
    if result.row is None:
        assert all(isinstance(e, str) and e for e in result.errors)
        return
    errors = rows.validate_row(result.row)
    if not errors:
        rendered = fg.render_row(result.row)
        json.dumps({**rendered, "tools": result.row["tools"]}, ensure_ascii=False).encode("utf-8")
        assert fg.parse_output(rendered["completion"]).calls == fg.calls_from_message(result.row["messages"][-1])
