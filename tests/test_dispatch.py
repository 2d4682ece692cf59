"""Local dispatch: order, generators, depth, the hop limit, metadata and copies."""

import itertools
import os
import subprocess
import sys

import pytest

from emitcli import Message, Router
from emitcli.errors import HopLimitError, ResultError
from emitcli.local import LocalEngine, StopRun
from emitcli.messages import ENTRY_POINT


def collect(router, message, **options):
    """Run ``message`` through ``router``; return (outputs as (node, fields), errors)."""
    outputs, errors = [], []
    engine = LocalEngine(
        router,
        on_output=lambda spec, fields: outputs.append((spec.name, fields)),
        on_error=lambda node, msg, exc: errors.append((node, msg, exc)),
        **options,
    )
    engine.send(message)
    return outputs, errors


def ping_pong(router, make_generators=False):
    """An entry node feeding a two-node cycle; returns the names (start, ping, pong)."""
    calls = []

    def relay(name):
        if make_generators:

            def node(msg):
                calls.append(name)
                yield msg.n + 1

        else:

            def node(msg):
                calls.append(name)
                return msg.n + 1

        return node

    router.register("tests.start", relay("start"), ("n",), entry_point=True)
    router.register("tests.ping", relay("ping"), ("n",), ["start", "pong"])
    router.register("tests.pong", relay("pong"), ("n",), "ping")
    return calls


# Order -----------------------------------------------------------------------


def test_dispatch_is_depth_first_with_subscribers_in_registration_order():
    router = Router()
    calls = []
    # Registered breadth-first, so neither registration order nor a
    # breadth-first run gives the depth-first order asserted below.
    subscriptions = {"a": None, "b": "a", "c": "a", "d": "b", "e": "d", "f": "c"}
    for name, origin in subscriptions.items():

        def node(msg, name=name):
            calls.append(name)
            return f"{msg.path}/{name}"

        router.register(f"tests.{name}", node, ("path",), origin, entry_point=origin is None)

    outputs, _ = collect(router, Message(path=""))

    assert calls == ["a", "b", "d", "e", "c", "f"]
    assert [fields["path"] for _, fields in outputs] == ["/a/b/d/e", "/a/c/f"]


NAMES = ["zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "pi"]

# Set and dict ordering of strings changes with the hash seed; the 2013 library
# let it decide the order of subscribers.
ORDER_PROBE = f"""
from emitcli import Router

router = Router()
calls = []
router.register("app.source", lambda msg: msg.x, ("x",), entry_point=True)
for name in {NAMES!r}:
    node = lambda msg, name=name: calls.append(name)
    patterns = [".+", "source", name[::-1]]
    router.register(f"app.{{name}}", node, ("x",), patterns, ignore="__entry_point")
router(x=1)
print(" ".join(calls))
"""


def run_order_probe(seed):
    done = subprocess.run(
        [sys.executable, "-c", ORDER_PROBE],
        env={**os.environ, "PYTHONHASHSEED": str(seed)},
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(done.stdout.split())


def test_the_order_is_registration_order_whatever_the_hash_seed():
    orders = {run_order_probe(seed) for seed in range(4)}

    assert orders == {tuple(NAMES)}


# Generators ------------------------------------------------------------------


def test_a_subscriber_sees_each_item_before_the_generator_makes_the_next():
    router = Router()
    events = []

    @router.node(("n",), entry_point=True)
    def produce(msg):
        for n in range(3):
            events.append(f"made {n}")
            yield n

    @router.node(("n",), "produce")
    def consume(msg):
        events.append(f"got {msg.n}")

    router(x=1)

    assert events == ["made 0", "got 0", "made 1", "got 1", "made 2", "got 2"]


def test_a_generator_that_fails_part_way_keeps_what_it_yielded_before():
    router = Router()

    @router.node(("n",), entry_point=True)
    def produce(msg):
        yield 1
        yield 2
        raise RuntimeError("source dried up")

    @router.node(("n",), "produce")
    def sink(msg):
        return msg.n

    @router.node(("after",), entry_point=True)
    def second_entry(msg):
        return "still runs"

    outputs, errors = collect(router, Message(x=1))

    assert outputs == [
        (sink.node_name, {"n": 1}),
        (sink.node_name, {"n": 2}),
        (second_entry.node_name, {"after": "still runs"}),
    ]
    [(node, message, exc)] = errors
    assert (node, message, str(exc)) == (produce.node_name, {"x": 1}, "source dried up")


def test_an_endless_generator_stops_when_the_output_handler_ends_the_run():
    router = Router()
    made = []

    @router.node(("n",), entry_point=True)
    def forever(msg):
        for n in itertools.count():
            made.append(n)
            yield n

    @router.node(("square",), "forever")
    def square(msg):
        return msg.n * msg.n

    outputs = []

    def take_five(spec, fields):
        outputs.append(fields["square"])
        if len(outputs) == 5:
            raise StopRun

    with pytest.raises(StopRun):
        LocalEngine(router, on_output=take_five).send(Message())

    assert outputs == [n * n for n in range(5)]
    assert made == list(range(5))


def test_a_generator_result_of_a_node_called_directly_is_returned_whole():
    router = Router()

    @router.node(("word",), entry_point=True)
    def split(msg):
        yield from msg.text.split()

    assert split(text="the rain") == (Message(word="the"), Message(word="rain"))


# Depth -----------------------------------------------------------------------


def test_a_chain_far_longer_than_the_recursion_limit_runs_without_recursion_error():
    length = max(3000, sys.getrecursionlimit() * 3)
    router = Router(max_hops=length + 1)

    def add_one(msg):
        return msg.n + 1

    def add_one_lazily(msg):
        yield msg.n + 1

    for i in range(length):
        node = add_one_lazily if i % 2 else add_one
        router.register(f"tests.chain.n{i}", node, ("n",), f"n{i - 1}", entry_point=i == 0)

    outputs, errors = collect(router, Message(n=0))

    assert errors == []
    assert outputs == [(f"tests.chain.n{length - 1}", {"n": length})]


# The hop limit ---------------------------------------------------------------


@pytest.mark.parametrize("generators", [False, True], ids=["returning", "generating"])
def test_a_cycle_is_dropped_after_the_default_hop_limit_of_one_hundred(generators):
    router = Router()
    calls = ping_pong(router, generators)

    _, errors = collect(router, Message(n=0))

    assert len(calls) == router.max_hops == 100
    [(node, message, exc)] = errors
    assert isinstance(exc, HopLimitError)
    assert message.n == len(calls) and message._hops == len(calls)
    assert exc.node == node


@pytest.mark.parametrize("generators", [False, True], ids=["returning", "generating"])
def test_the_hop_limit_is_set_per_router(generators):
    router = Router(max_hops=7)
    calls = ping_pong(router, generators)

    _, errors = collect(router, Message(n=0))

    assert len(calls) == 7
    assert [exc.limit for _, _, exc in errors] == [7]


@pytest.mark.parametrize("generators", [False, True], ids=["returning", "generating"])
def test_the_hop_limit_error_shows_the_cycle(generators):
    router = Router(max_hops=10)
    ping_pong(router, generators)

    with pytest.raises(HopLimitError) as info:
        router(n=0)

    dropped_before = info.value.node
    other = ({"tests.ping", "tests.pong"} - {dropped_before}).pop()
    assert f"cycle {dropped_before} -> {other} -> {dropped_before}" in str(info.value)
    assert info.value.path[-3:] == [dropped_before, other, dropped_before]
    assert len(getattr(info.value, "__notes__", [])) == 1


def test_the_hop_limit_error_of_a_long_chain_shows_the_end_of_the_path():
    router = Router(max_hops=5)
    names = [f"tests.chain.n{i}" for i in range(8)]
    for i, name in enumerate(names):
        router.register(name, lambda msg: msg.n + 1, ("n",), f"n{i - 1}", entry_point=i == 0)

    _, errors = collect(router, Message(n=0))

    [(node, _, exc)] = errors
    assert node == names[5]
    assert "path ... -> " + " -> ".join(names[1:6]) in str(exc)


def test_a_dropped_cycle_does_not_stop_the_other_branches():
    router = Router(max_hops=6)
    ping_pong(router)
    router.register("tests.sink", lambda msg: msg.n, ("n",), "start")

    outputs, errors = collect(router, Message(n=0))

    assert outputs == [("tests.sink", {"n": 1})]
    assert [type(exc) for _, _, exc in errors] == [HopLimitError]


# Metadata --------------------------------------------------------------------


def test_metadata_tells_sender_run_hop_parent_and_hop_count():
    router = Router()
    seen = {}

    def record(name):
        def node(msg):
            seen[name] = msg
            return msg.n + 1

        return node

    router.register("tests.a", record("a"), ("n",), entry_point=True)
    router.register("tests.b", record("b"), ("n",), "a")
    router.register("tests.c", record("c"), ("n",), "b")

    router(n=0)

    a, b, c = seen["a"], seen["b"], seen["c"]
    assert [m._origin for m in (a, b, c)] == [ENTRY_POINT, "tests.a", "tests.b"]
    assert [m._hops for m in (a, b, c)] == [0, 1, 2]
    assert a._run == b._run == c._run is not None
    assert (b._parent, c._parent) == (a._hop, b._hop)
    assert len({a._hop, b._hop, c._hop}) == 3


def test_each_call_of_the_router_is_a_run_of_its_own():
    router = Router()
    runs = []
    router.register("tests.a", lambda msg: runs.append(msg._run), ("n",), entry_point=True)

    router(n=1)
    router(n=2)

    assert len(set(runs)) == 2


def test_a_field_named_origin_travels_beside_the_sender_metadata():
    router = Router()
    seen = []

    @router.node(("origin", "hops"), entry_point=True)
    def relabel(msg):
        return f"was {msg.origin}", 42

    @router.node(("origin",), "relabel")
    def sink(msg):
        seen.append((msg.origin, msg.hops, msg._origin, msg._hops))

    router(origin="the user")

    assert seen == [("was the user", 42, relabel.node_name, 1)]


# Copies ----------------------------------------------------------------------


def graph_of_mutators(shape):
    """A source sending ``{"items": [1]}`` to three subscribers, the first two mutating."""
    router = Router()
    seen = []

    def source(msg):
        if shape == "generator":
            return (items for items in [[1]])
        return [1]

    def append(msg):
        msg.items.append("changed")
        seen.append(list(msg.items))

    def rebind(msg):
        msg.items = "rebound"
        seen.append(msg.items)

    def look(msg):
        seen.append(list(msg.items))

    if shape == "entry input":
        origin = None
    else:
        router.register("tests.source", source, ("items",), entry_point=True)
        origin = "source"
    for node in (append, rebind, look):
        router.register(f"tests.{node.__name__}", node, ("x",), origin, origin is None)
    return router, seen


@pytest.mark.parametrize("shape", ["return", "generator", "entry input"])
def test_each_subscriber_gets_its_own_copy_of_the_message(shape):
    router, seen = graph_of_mutators(shape)

    router(items=[1])

    assert seen == [[1, "changed"], "rebound", [1]]


# The engine's handlers -------------------------------------------------------


def test_outputs_default_to_the_sinks_of_the_graph():
    router = Router()
    router.register("tests.a", lambda msg: msg.n + 1, ("n",), entry_point=True)
    router.register("tests.b", lambda msg: msg.n * 10, ("n",), "a")
    router.register("tests.c", lambda msg: msg.n * 100, ("n",), "a")

    outputs, _ = collect(router, Message(n=1))

    assert outputs == [("tests.b", {"n": 20}), ("tests.c", {"n": 200})]


def test_chosen_outputs_may_be_any_nodes():
    router = Router()
    router.register("tests.a", lambda msg: msg.n + 1, ("n",), entry_point=True)
    router.register("tests.b", lambda msg: msg.n * 10, ("n",), "a")

    outputs, _ = collect(router, Message(n=1), outputs={"tests.a", "tests.b"})

    assert outputs == [("tests.a", {"n": 2}), ("tests.b", {"n": 20})]


def test_a_failing_node_goes_to_the_error_handler_and_the_run_goes_on():
    router = Router()

    def fussy(msg):
        if msg.n == 2:
            raise KeyError("two")
        return msg.n

    router.register("tests.split", lambda msg: (n for n in msg.ns), ("n",), entry_point=True)
    router.register("tests.fussy", fussy, ("n",), "split")
    router.register("tests.calm", lambda msg: msg.n, ("n",), "split")

    outputs, errors = collect(router, Message(ns=[1, 2, 3]))

    assert [(n, f["n"]) for n, f in outputs] == [
        ("tests.fussy", 1),
        ("tests.calm", 1),
        ("tests.calm", 2),
        ("tests.fussy", 3),
        ("tests.calm", 3),
    ]
    [(node, message, exc)] = errors
    assert (node, message, message._origin) == ("tests.fussy", {"n": 2}, "tests.split")
    assert isinstance(exc, KeyError)


def test_by_default_a_node_error_reaches_the_caller_with_the_node_named():
    router = Router()
    router.register("tests.a", lambda msg: 1 / msg.n, ("x",), entry_point=True)

    with pytest.raises(ZeroDivisionError) as info:
        router(n=0)

    assert info.value.__notes__ == ["raised in emit node 'tests.a' on Message(n=0)"]


def relay_graph(result, generator):
    """``tests.source`` -> ``tests.a`` (sending ``result``) -> ``tests.b``.

    ``tests.a`` is not an entry point, so it runs inside the dispatch loop
    rather than as the first delivery of a run.
    """
    router = Router()
    router.register("tests.source", lambda msg: msg.n, ("n",), entry_point=True)
    if generator:
        router.register("tests.a", lambda msg: (r for r in [result]), ("n", "m"), "source")
    else:
        router.register("tests.a", lambda msg: result, ("n", "m"), "source")
    router.register("tests.b", lambda msg: msg.n, ("n",), "a")
    return router


@pytest.mark.parametrize("generator", [False, True], ids=["returning", "generating"])
def test_an_error_raised_by_the_output_handler_reaches_the_caller(generator):
    router = relay_graph((1, 2), generator)
    errors = []

    def broken(spec, fields):
        raise OSError("disk full")

    engine = LocalEngine(
        router, on_output=broken, outputs={"tests.a"}, on_error=lambda *e: errors.append(e)
    )
    with pytest.raises(OSError, match="disk full"):
        engine.send(Message(n=1))

    assert errors == []


@pytest.mark.parametrize("generator", [False, True], ids=["returning", "generating"])
def test_an_error_handler_that_raises_is_called_once_per_failure(generator):
    router = relay_graph(["a list", "for two fields"], generator)
    seen = []

    def stop(node, message, exc):
        seen.append((node, type(exc)))
        raise RuntimeError("stop the run")

    with pytest.raises(RuntimeError, match="stop the run"):
        LocalEngine(router, on_error=stop).send(Message(n=1))

    assert seen == [("tests.a", ResultError)]


def test_routing_from_an_origin_nobody_subscribes_to_sends_nothing_and_does_not_fail():
    router = Router()

    @router.node("x", entry_point=True)
    def start(msg):
        return 1

    assert LocalEngine(router).send(Message(x=1), origin="nobody.listens") == ()
    router.route("nobody.listens", Message(x=1))
