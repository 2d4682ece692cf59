"""Result shapes and JSON-compatible values: what a node's return value becomes."""

import enum
import json

import pytest

from emitcli import Message, NoResult, Router
from emitcli.errors import ResultError, ValueTypeError
from emitcli.local import LocalEngine


class Ratio(float):
    """A float subclass, like numpy.float64."""


class Label(str):
    """A str subclass."""


class Colour(enum.IntEnum):
    RED = 1


def node_with(fields, result):
    """A router with one entry node returning ``result``; the node's name."""
    router = Router()

    def produce(msg):
        return result

    router.node(fields, entry_point=True)(produce)
    return router, router.get_name(produce)


def shaped(fields, result):
    router, name = node_with(fields, result)
    return router.wrap_result(name, result)


def test_a_tuple_is_zipped_with_the_fields_in_order():
    assert shaped(("quotient", "remainder"), (2, 1)) == ({"quotient": 2, "remainder": 1},)


def test_a_one_tuple_fills_a_one_field_node():
    assert shaped(("word",), ("rain",)) == ({"word": "rain"},)


def test_an_empty_tuple_fills_a_node_without_fields():
    assert shaped((), ()) == ({},)


@pytest.mark.parametrize(
    ("fields", "result"),
    [(("a", "b"), (1,)), (("a", "b"), (1, 2, 3)), (("a",), (1, 2)), ((), (1,))],
    ids=["too short", "too long", "two for one", "one for none"],
)
def test_a_tuple_of_another_length_is_an_error_naming_node_fields_and_result(fields, result):
    router, name = node_with(fields, result)

    with pytest.raises(ResultError) as info:
        router.wrap_result(name, result)

    text = str(info.value)
    assert repr(name) in text
    assert all(repr(field) in text for field in fields)
    assert f"tuple of {len(result)} value(s) for {len(fields)} field(s)" in text
    assert repr(result) in text
    assert (info.value.node, info.value.fields) == (name, fields)


def test_a_dict_whose_keys_are_exactly_the_fields_is_the_message_itself():
    result = {"remainder": 1, "quotient": 2}

    assert shaped(("quotient", "remainder"), result) == (result,)


def test_a_dict_keyed_by_the_single_field_is_the_message_itself():
    assert shaped(("word",), {"word": "rain"}) == ({"word": "rain"},)


def test_a_dict_with_other_keys_fills_a_one_field_node():
    result = {"lat": 1.5, "lon": 2.5}

    assert shaped(("position",), result) == ({"position": result},)


def test_a_dict_with_other_keys_is_an_error_for_a_node_of_several_fields():
    router, name = node_with(("quotient", "remainder"), {"quotient": 2, "rest": 1})

    with pytest.raises(ResultError) as info:
        router.wrap_result(name, {"quotient": 2, "rest": 1})

    assert "missing ['remainder']" in str(info.value)
    assert "unexpected ['rest']" in str(info.value)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("value", ["rain", 3, 2.5, True, ["a", "b"], [], {}, Label("x")], ids=repr)
def test_any_other_single_value_fills_a_one_field_node(value):
    assert shaped(("value",), value) == ({"value": value},)


@pytest.mark.parametrize("value", ["rain", 3, ["a", "b"], {"a": 1}], ids=repr)
def test_a_single_value_is_an_error_for_a_node_of_several_fields(value):
    router, name = node_with(("a", "b"), value)

    with pytest.raises(ResultError) as info:
        router.wrap_result(name, value)

    assert repr(name) in str(info.value)
    assert "('a', 'b')" in str(info.value)
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("nothing", [None, NoResult], ids=repr)
def test_none_and_no_result_send_nothing(nothing):
    router = Router()
    reached = []

    @router.node(("word",), entry_point=True)
    def quiet(msg):
        return nothing

    @router.node(("word",), "quiet")
    def listener(msg):
        reached.append(msg)

    assert router.wrap_result(quiet.node_name, nothing) == ()
    assert router(word="rain") == ()
    assert reached == []


def test_a_generator_result_is_shaped_item_by_item_skipping_nothing_values():
    def results():
        yield "rain"
        yield None
        yield NoResult
        yield ("spain",)

    assert shaped(("word",), results()) == ({"word": "rain"}, {"word": "spain"})


def test_a_result_error_is_a_value_error_as_the_seed_documented():
    router, name = node_with(("a", "b"), (1,))

    with pytest.raises(ValueError):
        router.wrap_result(name, (1,))


def test_a_bad_result_in_a_run_goes_to_the_error_handler_with_node_and_input():
    router, name = node_with(("a", "b"), [1, 2])
    errors = []

    LocalEngine(router, on_error=lambda *error: errors.append(error)).send(Message(x=1))

    [(node, message, exc)] = errors
    assert (node, message) == (name, {"x": 1})
    assert isinstance(exc, ResultError)


def test_a_bad_result_raises_from_a_router_call_by_default():
    router, _ = node_with(("a", "b"), "one value")

    with pytest.raises(ResultError, match="returned str 'one value'"):
        router(x=1)


# JSON-compatible values ------------------------------------------------------

NOT_JSON = [
    float("nan"),
    float("inf"),
    float("-inf"),
    Ratio("nan"),
    [1.0, float("nan")],
    {"deep": {"er": [float("inf")]}},
    {1, 2},
    frozenset({1}),
    b"bytes",
    bytearray(b"x"),
    object(),
    1 + 2j,
    {1: "int key"},
    [{"ok": 1}, {2}],
]


@pytest.mark.parametrize("value", NOT_JSON, ids=repr)
def test_a_value_json_cannot_carry_is_refused_naming_node_and_field(value):
    router, name = node_with(("count", "value"), (1, value))

    with pytest.raises(ValueTypeError) as info:
        router(x=1)

    assert info.value.field == "value"
    assert info.value.node == name
    assert "field 'value'" in str(info.value) and repr(name) in str(info.value)
    assert isinstance(info.value, ResultError)


@pytest.mark.parametrize("value", [float("nan"), {1, 2}], ids=repr)
def test_a_value_json_cannot_carry_is_refused_from_a_one_field_node_too(value):
    router, _ = node_with(("value",), value)

    with pytest.raises(ValueTypeError, match="field 'value'"):
        router(x=1)


def test_a_value_json_cannot_carry_is_refused_from_a_generator_and_the_rest_goes_on():
    router = Router()
    errors = []

    @router.node(("value",), entry_point=True)
    def produce(msg):
        yield 1.5
        yield float("nan")
        yield 2.5

    @router.node(("value",), "produce")
    def sink(msg):
        return msg.value

    outputs = []
    engine = LocalEngine(
        router,
        on_output=lambda spec, fields: outputs.append(fields["value"]),
        on_error=lambda node, message, exc: errors.append((node, type(exc))),
    )
    engine.send(Message(x=1))

    assert outputs == [1.5, 2.5]
    assert errors == [(produce.node_name, ValueTypeError)]


def test_a_big_integer_keeps_every_digit():
    big = 3**200 + 1
    router, _ = node_with(("n", "nested"), (big, [big, {"k": -big}]))
    outputs = []

    LocalEngine(router, on_output=lambda spec, fields: outputs.append(fields)).send(Message())

    [fields] = outputs
    assert fields == {"n": big, "nested": [big, {"k": -big}]}
    assert json.loads(Message(fields).as_json()) == fields


@pytest.mark.parametrize(
    "value",
    [Ratio(0.5), Label("rain"), Colour.RED, [Ratio(1.5), Label("x")], 1e308, -0.0, (1, "a")],
    ids=repr,
)
def test_subclasses_of_float_str_and_int_and_finite_floats_are_accepted(value):
    router, _ = node_with(("count", "value"), (1, value))
    outputs = []

    LocalEngine(router, on_output=lambda spec, fields: outputs.append(fields)).send(Message())

    assert outputs == [{"count": 1, "value": value}]
    assert json.loads(json.dumps(outputs[0], allow_nan=False))["count"] == 1
