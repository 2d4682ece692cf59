"""Subscription and ignore patterns: the whole name or a whole dot-separated tail."""

import pytest

from emitcli import Router
from emitcli.errors import GraphError, PatternError
from emitcli.messages import ENTRY_POINT
from emitcli.patterns import NameIndex, Pattern

NAMES = [
    "app.tasks.emit_words",
    "app.tasks.clean",
    "app.tasks.clean_v2",
    "emit_words",
    "words",
    "other.words",
    ENTRY_POINT,
]

CASES = [
    ("emit_words", "app.tasks.emit_words", True),
    ("tasks.emit_words", "app.tasks.emit_words", True),
    ("app.tasks.emit_words", "app.tasks.emit_words", True),
    (".+", "app.tasks.emit_words", True),
    ("emit_.*", "app.tasks.emit_words", True),
    (r"tasks\.(emit_words|clean)", "app.tasks.clean", True),
    ("(?i)EMIT_WORDS", "app.tasks.emit_words", True),
    ("words", "emit_words", False),
    ("words", "app.tasks.emit_words", False),
    ("clean", "clean_v2", False),
    ("clean", "app.tasks.clean_v2", False),
    ("clean", "app.tasks.clean", True),
    ("tasks", "app.tasks.emit_words", False),
    ("app", "app.tasks.emit_words", False),
    ("app.tasks", "app.tasks.emit_words", False),
    ("s.emit_words", "app.tasks.emit_words", False),
    ("ks.emit_words", "app.tasks.emit_words", False),
    ("emit", "app.tasks.emit_words", False),
    (".+", ENTRY_POINT, True),
    ("entry_point", ENTRY_POINT, False),
]


@pytest.mark.parametrize(("text", "name", "expected"), CASES)
def test_a_pattern_matches_a_whole_name_or_a_whole_dotted_tail_of_it(text, name, expected):
    assert Pattern(text, "node").matches(name) is expected


@pytest.mark.parametrize(("text", "name", "expected"), CASES)
def test_selecting_names_through_the_index_agrees_with_matching_one_by_one(text, name, expected):
    names = sorted({*NAMES, name})
    pattern = Pattern(text, "node")

    selected = pattern.select(NameIndex(names))

    assert (name in selected) is expected
    assert selected == {n for n in names if pattern.matches(n)}


def graph(*names, subscribe_to=None, ignore=None):
    """A router holding ``names`` and a ``listener`` node subscribed as given."""
    router = Router()
    for name in names:
        router.register(name, lambda msg: NotImplemented, ("x",))
    router.register("tests.listener", lambda msg: None, ("x",), subscribe_to, ignore=ignore)
    return router


def origins_of(router, node):
    return {origin for origin, subs in router.routes.items() if node in [s.name for s in subs]}


def test_a_subscription_reaches_exactly_the_nodes_its_pattern_matches():
    router = graph(*NAMES[:-1], subscribe_to="emit_words")

    assert origins_of(router, "tests.listener") == {"app.tasks.emit_words", "emit_words"}


def test_a_subscription_by_a_longer_tail_narrows_the_match():
    router = graph(*NAMES[:-1], subscribe_to="tasks.emit_words")

    assert origins_of(router, "tests.listener") == {"app.tasks.emit_words"}


@pytest.mark.parametrize(
    "spec",
    [
        ["clean", "other.words"],
        ("clean", "other.words"),
        {"clean", "other.words"},
        frozenset({"clean", "other.words"}),
        (text for text in ["clean", "other.words"]),
        iter(["clean", "other.words"]),
    ],
    ids=["list", "tuple", "set", "frozenset", "generator", "iterator"],
)
def test_subscriptions_are_a_string_or_any_iterable_of_strings(spec):
    router = graph(*NAMES[:-1], subscribe_to=spec)

    assert origins_of(router, "tests.listener") == {"app.tasks.clean", "other.words"}


@pytest.mark.parametrize(
    "spec",
    ["app.tasks.clean_v2", ["app.tasks.clean_v2"], (t for t in ["app.tasks.clean_v2"])],
    ids=["string", "list", "generator"],
)
def test_ignores_are_a_string_or_any_iterable_of_strings(spec):
    router = graph(*NAMES[:-1], subscribe_to="app.tasks.clean.*", ignore=spec)

    assert origins_of(router, "tests.listener") == {"app.tasks.clean"}


def test_an_ignore_removes_what_it_matches_from_a_broad_subscription():
    router = graph(*NAMES[:-1], subscribe_to=".+", ignore=["tasks.emit_words", "clean_v2"])

    expected = {ENTRY_POINT, *NAMES[:-1]} - {"app.tasks.emit_words", "app.tasks.clean_v2"}
    assert origins_of(router, "tests.listener") == expected


def test_an_ignore_follows_the_same_tail_rule_as_a_subscription():
    router = graph(*NAMES[:-1], subscribe_to=".+", ignore="words")

    assert "app.tasks.emit_words" in origins_of(router, "tests.listener")
    assert {"words", "other.words"}.isdisjoint(origins_of(router, "tests.listener"))


def test_the_entry_point_is_an_origin_that_a_broad_pattern_sees():
    router = graph("app.tasks.clean", subscribe_to=".+")

    assert "tests.listener" in router.subscribers(ENTRY_POINT)


def test_the_entry_point_can_be_ignored_like_any_origin():
    router = graph("app.tasks.clean", subscribe_to=".+", ignore=ENTRY_POINT)

    assert router.subscribers(ENTRY_POINT) == ()
    assert router.subscribers("app.tasks.clean") == ("tests.listener",)


def test_a_broad_pattern_never_subscribes_a_node_to_itself():
    router = graph("app.tasks.clean", subscribe_to=".+")

    assert "tests.listener" not in router.subscribers("tests.listener")


def test_a_node_naming_itself_is_not_subscribed_to_itself():
    router = graph("app.tasks.clean", subscribe_to=["listener", "clean"])

    assert router.subscribers("tests.listener") == ()
    assert router.subscribers("app.tasks.clean") == ("tests.listener",)


def test_a_broad_listener_hears_every_other_node_but_not_itself_when_run():
    router = Router()
    heard = []

    @router.node(("key", "value"), entry_point=True)
    def parse_querystring(msg):
        for part in msg.querystring.lstrip("?").split("&"):
            yield tuple(part.split("="))

    @router.node(("key", "value", "count"), "parse_querystring")
    def count_keyval(msg):
        return msg.key, msg.value, 1

    @router.node(("heard",), ".+")
    def notify_on_emit(msg):
        heard.append(msg._origin)
        return msg._origin  # were it subscribed to itself, this would loop

    router(querystring="?a=1&b=2&c=3")

    parse, count = parse_querystring.node_name, count_keyval.node_name
    assert sorted(heard) == sorted([ENTRY_POINT] + [parse] * 3 + [count] * 3)


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        ("subscribe_to", "tasks.(emit"),
        ("subscribe_to", ["clean", "[a-"]),
        ("ignore", "*words"),
        ("ignore", ["clean", ""]),
        ("subscribe_to", ["clean", 5]),
    ],
    ids=["open group", "bad class in a list", "nothing to repeat", "empty", "not a string"],
)
def test_a_bad_pattern_is_refused_at_registration_naming_the_node(where, bad):
    router = Router()

    def tally_words(msg):
        return msg.word

    with pytest.raises(PatternError) as info:
        router.node(("word",), **{where: bad})(tally_words)

    name = router.get_name(tally_words)
    assert repr(name) in str(info.value)
    assert info.value.node == name
    assert name not in router.nodes
    assert isinstance(info.value, GraphError)


@pytest.mark.parametrize("method", ["register_route", "register_ignore"])
def test_a_bad_pattern_added_later_is_refused_naming_the_node(method):
    router = graph("app.tasks.clean", subscribe_to="clean")

    with pytest.raises(PatternError, match=r"'tests\.listener'.*'\(clean'"):
        getattr(router, method)("(clean", "tests.listener")

    assert router.subscribers("app.tasks.clean") == ("tests.listener",)


def test_a_pattern_with_a_global_inline_flag_is_accepted():
    router = graph("app.tasks.Clean_Words", subscribe_to="(?i)clean_words")

    assert router.subscribers("app.tasks.Clean_Words") == ("tests.listener",)


def test_a_pattern_that_matches_no_node_yet_is_not_an_error():
    router = graph("app.tasks.clean", subscribe_to="not_written_yet")

    assert origins_of(router, "tests.listener") == set()
