"""Building the graph: node names, duplicates, fields, and when routes are resolved."""

import pytest

from emitcli import Message, Router
from emitcli.errors import DuplicateNodeError, GraphError
from emitcli.messages import ENTRY_POINT


def module_level_node(msg):
    return msg.word


class Tally:
    """A callable class, registered as an instance or by decorating the class."""

    def __init__(self):
        self.seen = 0

    def __call__(self, msg):
        self.seen += 1
        return msg.word, self.seen


class CountingRouter(Router):
    """Counts how often routes are resolved."""

    resolutions = 0

    def regenerate_routes(self):
        self.resolutions += 1
        return super().regenerate_routes()


def test_a_function_is_named_by_its_module_and_qualified_name():
    router = Router()

    node = router.node(("word",), entry_point=True)(module_level_node)

    assert node.node_name == f"{__name__}.module_level_node"
    assert f"{__name__}.module_level_node" in router.nodes


def test_a_function_defined_inside_another_is_named_by_its_full_qualified_name():
    router = Router()

    @router.node(("word",))
    def inner(msg):
        return msg.word

    outer = test_a_function_defined_inside_another_is_named_by_its_full_qualified_name
    expected = f"{__name__}.{outer.__name__}.<locals>.inner"
    assert list(router.nodes) == [expected]


def test_a_callable_instance_is_named_by_its_class():
    router = Router()
    tally = Tally()

    node = router.node(("word", "count"), entry_point=True)(tally)

    assert node.node_name == f"{__name__}.Tally"
    assert node(word="rain") == (Message(word="rain", count=1),)
    assert tally.seen == 1


def test_a_decorated_class_is_instantiated_once_and_named_by_the_class():
    router = Router()
    built = []

    @router.node(("word", "count"), entry_point=True)
    class Counter(Tally):
        def __init__(self):
            super().__init__()
            built.append(self)

    results = [router(word=w) for w in ["rain", "in", "spain"]]

    assert len(built) == 1
    assert [r[0].count for r in results] == [1, 2, 3]
    outer = test_a_decorated_class_is_instantiated_once_and_named_by_the_class
    assert Counter.node_name == f"{__name__}.{outer.__name__}.<locals>.Counter"
    assert isinstance(router.nodes[Counter.node_name].func, Tally)


def test_two_different_functions_with_one_name_are_refused_naming_both():
    router = Router()

    def twin(msg):
        return msg.a

    first = twin

    def twin(msg):  # the same name again: the point of the test
        return msg.b

    router.node(("x",), entry_point=True)(first)

    with pytest.raises(DuplicateNodeError) as info:
        router.node(("x",))(twin)

    text = str(info.value)
    assert repr(router.get_name(twin)) in text
    assert f"{__file__}:{first.__code__.co_firstlineno}" in text
    assert f"{__file__}:{twin.__code__.co_firstlineno}" in text
    assert router.nodes[router.get_name(twin)].func is first


def test_two_different_callable_classes_with_one_name_are_refused():
    router = Router()

    class Node:
        def __call__(self, msg):
            return 1

    first = Node

    class Node:  # the same name again: the point of the test
        def __call__(self, msg):
            return 2

    router.node(("x",))(first)

    with pytest.raises(DuplicateNodeError, match="two nodes are named"):
        router.node(("x",))(Node)


def test_the_same_function_registered_again_replaces_itself_without_error():
    router = Router()
    router.node(("word",), entry_point=True)(module_level_node)

    router.node(("word",), entry_point=True)(module_level_node)

    assert list(router.nodes) == [f"{__name__}.module_level_node"]
    assert router.entry_points == [f"{__name__}.module_level_node"]


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        (("word", "word"), "declared more than once"),
        (("word", "two words"), "not a valid name"),
        (("word", 3), "not a valid name"),
        (5, "must be a string or a sequence"),
    ],
)
def test_declared_fields_are_checked_at_registration(fields, complaint):
    router = Router()

    with pytest.raises(GraphError, match=complaint):
        router.node(fields)(module_level_node)

    assert router.nodes == {}


def test_a_string_of_fields_is_one_field():
    router = Router()

    router.node("word")(module_level_node)

    assert router.fields[f"{__name__}.module_level_node"] == ("word",)


def test_a_node_may_subscribe_to_a_name_registered_later():
    router = Router()

    @router.node(("count",), "split")
    def count(msg):
        return len(msg.word)

    @router.node(("word",), entry_point=True)
    def split(msg):
        yield from msg.text.split()

    assert router(text="the rain in spain") == tuple(
        Message(word=w) for w in ["the", "rain", "in", "spain"]
    )
    assert router.subscribers(split.node_name) == (count.node_name,)


def test_routes_are_resolved_once_and_not_per_message():
    router = CountingRouter()
    for i in range(20):
        router.register(f"tests.chain.n{i}", lambda msg: msg.x, ("x",), f"n{i - 1}", i == 0)

    for x in range(50):
        router(x=x)

    assert router.resolutions == 1


def test_routes_are_resolved_again_after_each_change_of_the_graph():
    router = CountingRouter()
    router.register("tests.a", lambda msg: msg.x, ("x",), entry_point=True)
    before = router.routes

    router.register("tests.b", lambda msg: msg.x, ("x",), "a")
    after = router.routes

    assert router.routes is after
    assert after is not before
    assert router.subscribers("tests.a") == ("tests.b",)
    assert router.resolutions == 2


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("register_route", ("a", "tests.c"), ["b", "c"]),
        ("register_ignore", ("a", "tests.b"), []),
        ("add_entry_point", ("tests.c",), ["b", "c"]),
    ],
)
def test_every_kind_of_change_is_seen_by_the_next_message(method, args, expected):
    router = Router()
    reached = []
    router.register("tests.a", lambda msg: msg.x, ("x",), entry_point=True)
    router.register("tests.b", lambda msg: reached.append("b"), ("x",), "a")
    router.register("tests.c", lambda msg: reached.append("c"), ("x",))
    router(x=1)
    assert reached == ["b"]
    reached.clear()

    getattr(router, method)(*args)
    router(x=1)

    assert reached == expected


def test_subscribers_are_kept_in_registration_order_whatever_their_names():
    router = Router()
    router.register("tests.source", lambda msg: msg.x, ("x",), entry_point=True)
    order = ["tests.zebra", "tests.apple", "tests.mango", "tests.banana"]
    reached = []
    for name in order:
        router.register(name, lambda msg, name=name: reached.append(name), ("x",), "source")

    router(x=1)

    assert router.subscribers("tests.source") == tuple(order)
    assert reached == order


def test_entry_points_are_kept_in_registration_order():
    router = Router()
    for name in ["tests.z", "tests.a", "tests.m"]:
        router.register(name, lambda msg, name=name: name, ("who",), entry_point=True)

    assert router.subscribers(ENTRY_POINT) == ("tests.z", "tests.a", "tests.m")
    assert [m.who for m in router()] == ["tests.z", "tests.a", "tests.m"]


@pytest.mark.parametrize("max_hops", [0, -1, 2.5, "10"])
def test_the_hop_limit_must_be_a_positive_integer(max_hops):
    with pytest.raises(GraphError, match="max_hops"):
        Router(max_hops=max_hops)


def test_the_message_class_must_be_message_or_a_subclass():
    with pytest.raises(GraphError, match="message_class"):
        Router(message_class=dict)
