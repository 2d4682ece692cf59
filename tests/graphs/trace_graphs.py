"""Graphs for the trace, record and replay tests.

``count`` fails on the word named by ``EMIT_TEST_BAD_WORD`` (by default
"bad"), and on none when it is empty: a node with a bug and the same node
after the fix, as a user meets them.
"""

import os
import time

from emitcli import Router
from emitcli.router.rq import RQRouter


def split(msg):
    yield from msg.line.split()


def count(msg):
    if msg.word == os.environ.get("EMIT_TEST_BAD_WORD", "bad"):
        raise ValueError(f"cannot count {msg.word!r}")
    return msg.word, len(msg.word)


def shout(msg):
    if msg.length < 2:
        return None
    return msg.word.upper()


def _word_graph(router):
    router.node("word", entry_point=True)(split)
    router.node(("word", "length"), subscribe_to="split")(count)
    router.node("word", subscribe_to="count")(shout)
    return router


words = _word_graph(Router())
# The same graph on RQ; the tests give it its Redis (-u, or a throw-away one).
rq_words = _word_graph(RQRouter(batch_size=2))


# A node that changes the message it was given, to show events keep what it took.
mutating = Router()


@mutating.node("items", entry_point=True)
def grow(msg):
    msg.items.append("added")
    return msg.items


# A cycle, to show the hop limit as an event.
loop = Router(max_hops=3)


@loop.node("n", entry_point=True, subscribe_to="again")
def once(msg):
    return msg.n + 1


@loop.node("n", subscribe_to="once")
def again(msg):
    return msg.n


# A generator with one bad item among good ones.
uneven = Router()


@uneven.node(("a", "b"), entry_point=True)
def pairs(msg):
    yield 1, 2
    yield 1, 2, 3
    yield 4, 5


# A node on RQ that runs past its timeout until fixed (EMIT_TEST_LATE empty):
# its batch fails as a whole, and no worker tells of its hop.
rq_late = RQRouter()


@rq_late.node("n", entry_point=True, timeout=1)
def late(msg):
    if os.environ.get("EMIT_TEST_LATE", "1"):
        time.sleep(5)
    return msg.n


# One record that sends thousands of messages, one of which fails far down.
flood = Router()


@flood.node(("n", "bad"), entry_point=True)
def spill(msg):
    for n in range(msg.count):
        yield n, msg.bad


@flood.node("n", "spill")
def drain(msg):
    if msg.n == msg.bad:
        raise ValueError(f"cannot drain {msg.n}")
    return msg.n
