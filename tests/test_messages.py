"""Message and NoResult: fields as attributes, metadata apart, copies, JSON and pickling."""

import json
import pickle

import pytest

from emitcli import Message, NoResult, Router
from emitcli.errors import MessageError
from emitcli.messages import ENTRY_POINT


class TaggedMessage(Message):
    """A message class of the user's own, at module level so pickle can find it."""

    def tag(self):
        return f"<{self._origin}>"


def routed_message():
    """A message that went through a graph, so every piece of metadata is set."""
    router = Router()

    @router.node(("word", "origin"), entry_point=True)
    def split(msg):
        for word in msg.text.split():
            yield word, "user field"

    @router.node(("word",), "split")
    def keep(msg):
        return msg.word

    return router(text="rain in spain")[1]


def test_fields_are_read_as_attributes_and_as_items():
    msg = Message({"word": "rain", "count": 2})

    assert (msg.word, msg.count) == ("rain", 2)
    assert (msg["word"], msg["count"]) == ("rain", 2)


def test_a_message_built_from_keywords_equals_one_built_from_a_mapping():
    assert Message(word="rain", count=2) == Message({"word": "rain", "count": 2})


def test_a_message_offers_the_mapping_reading_methods():
    msg = Message(word="rain", count=2)

    assert "word" in msg and "missing" not in msg
    assert list(msg) == ["word", "count"]
    assert len(msg) == 2
    assert msg.get("count") == 2 and msg.get("missing", "default") == "default"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(({"a": 1}, {"b": 2}), {}), (({"a": 1},), {"b": 2}), (("a=1",), {}), (([("a", 1)],), {})],
    ids=["two mappings", "mapping and keywords", "a string", "a list of pairs"],
)
def test_a_message_is_built_from_one_mapping_or_keywords_only(args, kwargs):
    with pytest.raises(MessageError, match="one mapping or from keywords") as info:
        Message(*args, **kwargs)

    assert isinstance(info.value, TypeError)


def test_a_missing_attribute_names_the_field_and_the_fields_present():
    msg = Message(word="rain", count=2)

    with pytest.raises(AttributeError) as info:
        _ = msg.wrod

    assert "'wrod'" in str(info.value)
    assert "fields present: count, word" in str(info.value)


def test_a_missing_item_names_the_field_and_the_fields_present():
    msg = Message(word="rain", count=2)

    with pytest.raises(KeyError) as info:
        _ = msg["wrod"]

    assert "'wrod'" in str(info.value)
    assert "fields present: count, word" in str(info.value)


def test_a_missing_field_on_an_empty_message_says_there_are_none():
    with pytest.raises(AttributeError, match="fields present: none"):
        _ = Message().word


def test_hasattr_and_getattr_with_a_default_treat_a_missing_field_as_absent():
    msg = Message(word="rain")

    assert not hasattr(msg, "count")
    assert getattr(msg, "count", 0) == 0


def test_as_dict_returns_a_copy_that_leaves_the_message_alone():
    msg = Message(words=["rain", "spain"], info={"seen": 1})
    before = json.loads(msg.as_json())

    fields = msg.as_dict()
    fields["words"].append("plain")
    fields["info"]["seen"] = 2
    fields["new"] = True

    assert msg == before
    assert fields != before


def test_as_json_is_one_compact_json_object_of_the_fields_only():
    fields = {"word": "niño", "count": 2, "tags": ["a", "b"], "origin": "user"}
    msg = Message(fields)

    text = msg.as_json()

    assert text == json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(text) == fields


def test_as_json_of_a_routed_message_carries_no_metadata():
    msg = routed_message()

    assert json.loads(msg.as_json()) == msg.as_dict()


def test_as_json_keeps_every_digit_of_a_big_integer():
    big = 2**100 + 1

    text = Message(n=big).as_json()

    assert str(big) in text
    assert json.loads(text)["n"] == big


def test_as_json_refuses_nan_instead_of_writing_invalid_json():
    with pytest.raises(ValueError):
        Message(x=float("nan")).as_json()


def test_messages_compare_equal_by_their_fields_with_messages_and_dicts():
    msg = Message(word="rain", count=2)

    assert msg == Message(count=2, word="rain")
    assert msg == {"word": "rain", "count": 2}
    assert {"word": "rain", "count": 2} == msg  # noqa: SIM300 - the dict's side on purpose
    assert msg != Message(word="rain")
    assert msg != {"word": "rain", "count": 3}
    assert msg != "rain"


def test_equality_compares_fields_and_not_metadata():
    msg = routed_message()

    assert msg._origin != ENTRY_POINT
    assert msg == Message(msg.as_dict())


def test_repr_shows_the_fields_and_evaluates_to_an_equal_message():
    msg = Message(word="rain", count=2, tags=["x"])

    text = repr(msg)

    assert text.startswith("Message(word='rain'")
    assert eval(text, {"Message": Message}) == msg


def test_a_message_round_trips_through_pickle_with_its_fields_and_metadata():
    msg = routed_message()

    copy = pickle.loads(pickle.dumps(msg))

    assert copy == msg
    assert type(copy) is Message
    metadata = ("_origin", "_run", "_hop", "_parent", "_hops")
    assert [getattr(copy, name) for name in metadata] == [getattr(msg, name) for name in metadata]
    assert msg._run is not None and msg._parent is not None and msg._hops == 1


def test_a_message_of_a_subclass_round_trips_through_pickle_as_that_subclass():
    msg = TaggedMessage(word="rain")

    copy = pickle.loads(pickle.dumps(msg))

    assert type(copy) is TaggedMessage
    assert copy == msg
    assert copy.tag() == f"<{ENTRY_POINT}>"


def test_a_field_may_share_a_name_with_any_piece_of_metadata():
    names = ["origin", "run", "hop", "parent", "hops", "meta", "metadata"]
    msg = Message({name: f"field {name}" for name in names})

    assert [getattr(msg, name) for name in names] == [f"field {name}" for name in names]
    assert msg._origin == ENTRY_POINT
    assert msg._hops == 0


def test_a_new_message_comes_from_the_entry_point_with_no_hops_yet():
    msg = Message(word="rain")

    assert (msg._origin, msg._run, msg._hop, msg._parent, msg._hops) == (
        ENTRY_POINT,
        None,
        None,
        None,
        0,
    )


def test_no_result_is_a_single_falsy_value_that_survives_pickling():
    assert not NoResult
    assert repr(NoResult) == "NoResult"
    assert type(NoResult)() is NoResult
    assert pickle.loads(pickle.dumps(NoResult)) is NoResult
