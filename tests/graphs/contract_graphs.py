"""The graphs of the contract tests, each built alike on a local Router and an RQRouter.

``<case>_local`` and ``<case>_rq`` are the same nodes under the same names;
the tests give the RQ ones their Redis connection.
"""

from collections.abc import Callable

from emitcli import NoResult, Router
from emitcli.router.rq import RQRouter

#: Hops a message may pass in these graphs, small so that a cycle ends soon.
MAX_HOPS = 5

Build = Callable[[Router], Router]


def both(build: Build) -> tuple[Router, RQRouter]:
    """The graph ``build`` makes, on a local Router and on an RQRouter."""
    rq = build(RQRouter(max_hops=MAX_HOPS))
    assert isinstance(rq, RQRouter)
    return build(Router(max_hops=MAX_HOPS)), rq


# Result shapes ---------------------------------------------------------------

RESULTS = {
    "tuple": (1, "x"),
    "dict": {"a": 2, "b": "y"},
    "none": None,
    "noresult": NoResult,
    "short tuple": (1,),
    "list": [1, "x"],
}


def shape(msg):
    return RESULTS[msg.kind]


def one_field(msg):
    # Any single value fills a one-field node, a dict whose keys are not the field too.
    return {"kind": msg.kind}


def shapes(router: Router) -> Router:
    router.register("contract.shape", shape, ("a", "b"), entry_point=True)
    router.register("contract.one_field", one_field, ("value",), entry_point=True)
    return router


shapes_local, shapes_rq = both(shapes)


# Generators ------------------------------------------------------------------


def count(msg):
    for i in range(int(msg.n)):
        if i == int(msg.fail_at):
            raise RuntimeError(f"stopped at {i}")
        yield i


def label(msg):
    return f"item {msg.i}"


def generators(router: Router) -> Router:
    router.register("contract.count", count, ("i",), entry_point=True)
    router.register("contract.label", label, ("text",), "count")
    return router


generators_local, generators_rq = both(generators)


# Fan-out: each subscriber its own copy --------------------------------------


def items(msg):
    return [1, 2]


def append(msg):
    msg.items.append(3)
    return len(msg.items)


def measure(msg):
    return len(msg.items)


def fan_out(router: Router) -> Router:
    router.register("contract.items", items, ("items",), entry_point=True)
    router.register("contract.append", append, ("length",), "items")
    router.register("contract.measure", measure, ("length",), "items")
    return router


fan_out_local, fan_out_rq = both(fan_out)


# A cycle, dropped at the hop limit -------------------------------------------


def step(msg):
    return int(msg.n) + 1


def cycle(router: Router) -> Router:
    router.register("contract.start", step, ("n",), entry_point=True)
    router.register("contract.ping", step, ("n",), ["start", "pong"])
    router.register("contract.pong", step, ("n",), "ping")
    return router


cycle_local, cycle_rq = both(cycle)


# Values: a node that raises, big integers, NaN ----------------------------------


def divide(msg):
    return 10 // int(msg.n)


def double(msg):
    return msg.n * 2


def ratio(msg):
    return float(msg.x) / float(msg.y)


def values(router: Router) -> Router:
    router.register("contract.divide", divide, ("quotient",), entry_point=True)
    router.register("contract.double", double, ("n",), entry_point=True)
    router.register("contract.ratio", ratio, ("ratio",), entry_point=True)
    return router


values_local, values_rq = both(values)
