"""The Router API the 2013 library documented, under ``emitcli``."""

import importlib
import sys
from collections import Counter

import pytest

from emitcli import Message, Router
from emitcli.errors import GraphError, MessageError, OptionError
from emitcli.messages import ENTRY_POINT
from emitcli.router.core import Router as CoreRouter


class TaggedMessage(Message):
    pass


class QueueRouter(Router):
    """A backend in the seed's style: knows one option and wraps each node with it."""

    node_options = frozenset({"queue"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wrapped = {}

    def wrap_node(self, node, options):
        self.wrapped[node.node_name] = options

        def on_queue(*args, **kwargs):
            return options.get("queue", "default"), node(*args, **kwargs)

        on_queue.node_name = node.node_name
        return on_queue


class LenientRouter(QueueRouter):
    """A subclass written before options were checked: it accepts any."""

    node_options = None


def word_graph():
    """The seed's quickstart: split a document into words and count them."""
    router = Router()
    counts = Counter()

    @router.node(("word",), entry_point=True)
    def words(msg):
        yield from msg.document.strip().split(" ")

    @router.node(("word", "count"), "words")
    def count_word(msg):
        counts.update([msg.word])
        return msg.word, counts[msg.word]

    return router, words, count_word, counts


@pytest.fixture
def fresh_fixture_modules():
    """Forget the fixture node modules, so each test imports (and registers) them anew."""
    names = [f"tests.fixtures.{m}" for m in ("app", "tasks", "relative_app", "relative_tasks")]
    for name in names:
        sys.modules.pop(name, None)
    yield
    for name in names:
        sys.modules.pop(name, None)


def test_the_router_is_importable_from_the_package_and_the_seed_path():
    assert Router is CoreRouter


def test_the_seed_quickstart_counts_words():
    router, _, _, counts = word_graph()
    document = "the rain in spain falls mainly on the plain"

    router(document=document)

    assert counts == Counter(document.split(" "))


def test_calling_the_router_with_keywords_or_a_dict_returns_what_the_entry_points_produced():
    router, words, _, counts = word_graph()

    @router.node(("length",), entry_point=True)
    def measure(msg):
        return len(msg.document)

    by_keywords = router(document="the rain")
    by_dict = router({"document": "in spain"})

    expected = [{"word": "the"}, {"word": "rain"}, {"length": 8}]
    assert list(by_keywords) == expected
    assert list(by_dict) == [{"word": "in"}, {"word": "spain"}, {"length": 8}]
    assert [m._origin for m in by_dict] == [words.node_name] * 2 + [measure.node_name]
    assert counts == Counter(["the", "rain", "in", "spain"])


def test_calling_a_router_without_entry_points_is_an_error():
    router = Router()
    router.register("tests.a", lambda msg: msg.x, ("x",))

    with pytest.raises(GraphError, match="no entry point"):
        router(x=1)


def test_calling_a_node_directly_runs_it_and_routes_its_output():
    _, words, _, counts = word_graph()

    result = words(document="a b a")

    assert result == (Message(word="a"), Message(word="b"), Message(word="a"))
    assert counts == Counter({"a": 2, "b": 1})


def test_a_decorated_node_keeps_its_name_and_docstring():
    router = Router()

    @router.node(("word",))
    def tally(msg):
        """Count a word."""

    assert (tally.__name__, tally.__doc__) == ("tally", "Count a word.")
    assert router.functions[tally.node_name] is tally


def test_add_entry_point_makes_a_registered_node_receive_the_input():
    router, words, count_word, _ = word_graph()
    router.add_entry_point(count_word.node_name)

    result = router(document="rain", word="spain")

    assert router.entry_points == [words.node_name, count_word.node_name]
    assert result == (Message(word="rain"), Message(word="spain", count=1))


def test_naming_an_unknown_node_is_an_error_that_lists_the_nodes():
    router, words, _, _ = word_graph()

    with pytest.raises(GraphError, match=r"no node named 'nope'.*" + words.node_name):
        router.add_entry_point("nope")


def test_register_route_adds_origins_to_a_node():
    router = Router()
    router.register("tests.a", lambda msg: msg.x, ("x",), entry_point=True)
    router.register("tests.b", lambda msg: msg.x, ("x",))
    router.register("tests.c", lambda msg: msg.x, ("x",))

    router.register_route("a", "tests.c")
    router.register_route(["a", "c"], "tests.b")
    router.register_route(None, "tests.b")

    assert router.subscribers("tests.a") == ("tests.b", "tests.c")
    assert router.subscribers("tests.c") == ("tests.b",)


def test_register_ignore_takes_origins_away_from_a_node():
    router = Router()
    router.register("tests.a", lambda msg: msg.x, ("x",), entry_point=True)
    router.register("tests.b", lambda msg: msg.x, ("x",), "a")
    router.register("tests.spy", lambda msg: None, ("x",), ".+")

    router.register_ignore(["a", ENTRY_POINT], "tests.spy")

    assert router.subscribers("tests.a") == ("tests.b",)
    assert router.subscribers("tests.b") == ("tests.spy",)
    assert router.subscribers(ENTRY_POINT) == ("tests.a",)


def test_regenerate_routes_maps_every_origin_to_its_subscribers():
    router, words, count_word, _ = word_graph()

    routes = router.regenerate_routes()

    assert {origin: [s.name for s in subs] for origin, subs in routes.items()} == {
        ENTRY_POINT: [words.node_name],
        words.node_name: [count_word.node_name],
        count_word.node_name: [],
    }
    assert router.routes is routes


def test_resolve_node_modules_imports_the_modules_that_register_nodes(fresh_fixture_modules):
    from tests.fixtures.app import router

    assert router.nodes == {}

    [module] = router.resolve_node_modules()

    assert module.__name__ == "tests.fixtures.tasks"
    assert list(router.nodes) == ["tests.fixtures.tasks.emit_words", "tests.fixtures.tasks.measure"]
    assert [m.as_dict() for m in router(document="rain in")] == [{"word": "rain"}, {"word": "in"}]


def test_resolve_node_modules_takes_names_relative_to_the_node_package(fresh_fixture_modules):
    from tests.fixtures.relative_app import router

    router.resolve_node_modules()

    assert router(text="rain") == (Message(upper="RAIN"),)
    assert list(router.nodes) == ["tests.fixtures.relative_tasks.shout"]


def test_a_relative_node_module_without_a_node_package_is_an_error():
    router = Router(node_modules=[".tasks"])

    with pytest.raises(GraphError, match="relative but no node_package"):
        router.resolve_node_modules()


def test_a_missing_node_module_is_named_by_the_import_error():
    router = Router(node_modules=["tests.fixtures.not_there"])

    with pytest.raises(ModuleNotFoundError, match=r"tests\.fixtures\.not_there"):
        router.resolve_node_modules()


def test_reloading_a_node_module_registers_its_nodes_again_without_a_duplicate_error(
    fresh_fixture_modules,
):
    from tests.fixtures.app import router

    [module] = router.resolve_node_modules()
    importlib.reload(module)
    router.resolve_node_modules()

    assert list(router.nodes) == ["tests.fixtures.tasks.emit_words", "tests.fixtures.tasks.measure"]
    assert len(router(document="a b")) == 2


def test_get_message_from_call_accepts_a_dict_a_message_or_keywords():
    router = Router(message_class=TaggedMessage)
    given = Message(word="rain")

    from_dict = router.get_message_from_call({"word": "rain"})
    from_keywords = router.get_message_from_call(word="rain")

    assert router.get_message_from_call(given) is given
    assert from_dict == from_keywords == given
    assert type(from_dict) is type(from_keywords) is TaggedMessage


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(({"a": 1}, {"b": 2}), {}), (({"a": 1},), {"b": 2}), (("text",), {}), ((42,), {})],
    ids=["two dicts", "dict and keywords", "a string", "a number"],
)
def test_a_call_that_cannot_become_a_message_raises_a_message_error(args, kwargs):
    router, words, _, _ = word_graph()

    for call in (router.get_message_from_call, router, words):
        with pytest.raises(MessageError, match="one dict, one Message, or keyword") as info:
            call(*args, **kwargs)
        assert isinstance(info.value, TypeError)


def test_wrap_result_shapes_any_result_into_field_dicts():
    router, words, count_word, _ = word_graph()

    assert router.wrap_result(count_word.node_name, ("rain", 2)) == ({"word": "rain", "count": 2},)
    assert router.wrap_result(words.node_name, (w for w in ["a", "b"])) == (
        {"word": "a"},
        {"word": "b"},
    )
    assert router.wrap_result(words.node_name, None) == ()


def test_wrap_node_sees_the_options_and_its_result_is_the_node():
    router = QueueRouter()

    @router.node(("word",), entry_point=True, queue="words")
    def split(msg):
        yield from msg.text.split()

    @router.node(("word",), "split")
    def echo(msg):
        return msg.word

    assert router.wrapped == {split.node_name: {"queue": "words"}, echo.node_name: {}}
    assert split(text="a b") == ("words", (Message(word="a"), Message(word="b")))
    assert echo(word="c") == ("default", (Message(word="c"),))
    assert router.functions[split.node_name] is split


def test_an_option_the_router_does_not_know_is_refused_naming_node_and_option():
    router = Router()

    def tally(msg):
        return msg.word

    with pytest.raises(OptionError) as info:
        router.node(("word",), queue="words", timeout=3)(tally)

    text = str(info.value)
    assert repr(router.get_name(tally)) in text and "queue, timeout" in text
    assert router.nodes == {}
    assert isinstance(info.value, GraphError)


def test_a_backend_refuses_options_it_does_not_declare():
    router = QueueRouter()

    with pytest.raises(OptionError, match=r"QueueRouter does not know the option\(s\) rate"):
        router.node(("word",), queue="q", rate="5/s")(lambda msg: None)


def test_a_router_with_node_options_none_accepts_any_option():
    router = LenientRouter()

    @router.node(("word",), entry_point=True, queue="q", celery_task=print, anything=1)
    def echo(msg):
        return msg.word

    assert router.wrapped[echo.node_name] == {"queue": "q", "celery_task": print, "anything": 1}


def test_with_routing_disabled_a_node_called_directly_runs_alone():
    router, words, _, counts = word_graph()

    router.disable_routing()
    alone = words(document="a b")
    router.enable_routing()
    routed = words(document="c")

    assert alone == (Message(word="a"), Message(word="b"))
    assert routed == (Message(word="c"),)
    assert counts == Counter(["c"])


def test_the_routing_disabled_block_restores_routing_even_after_an_error():
    router, words, _, counts = word_graph()

    with pytest.raises(KeyError), router.routing_disabled() as disabled:
        assert disabled is router
        assert words(document="a") == (Message(word="a"),)
        raise KeyError("inside the block")

    assert router.routing_enabled
    words(document="b")
    assert counts == Counter(["b"])


def test_the_routing_disabled_block_leaves_routing_disabled_if_it_was_before():
    router, _, _, _ = word_graph()
    router.disable_routing()

    with router.routing_disabled():
        pass

    assert not router.routing_enabled


def test_with_routing_disabled_the_router_runs_its_entry_points_alone():
    router, _, _, counts = word_graph()

    with router.routing_disabled():
        result = router(document="a b")

    assert result == (Message(word="a"), Message(word="b"))
    assert counts == Counter()


def test_route_sends_a_message_from_an_origin_to_each_subscriber():
    router = Router()
    seen = []

    def record(name):
        def node(msg):
            msg.items.append(name)
            seen.append((name, msg._origin, list(msg.items)))

        return node

    router.register("tests.source", lambda msg: msg.items, ("items",), entry_point=True)
    router.register("tests.b", record("b"), ("x",), "source")
    router.register("tests.c", record("c"), ("x",), "source")

    router.route("tests.source", Message(items=[]))

    assert seen == [("b", "tests.source", ["b"]), ("c", "tests.source", ["c"])]


def test_route_does_nothing_while_routing_is_disabled():
    router, _, _, counts = word_graph()

    with router.routing_disabled():
        router.route(ENTRY_POINT, Message(document="a b"))

    assert counts == Counter()


def test_dispatch_runs_one_hop_from_the_given_origin():
    router, words, count_word, counts = word_graph()

    result = router.dispatch(words.node_name, count_word.node_name, Message(word="rain"))

    assert result == (Message(word="rain", count=1),)
    assert counts == Counter(["rain"])
    assert result[0]._origin == count_word.node_name
