"""Graphs for the trace, record and replay tests.

``count`` fails on the word named by ``EMIT_TEST_BAD_WORD`` (by default
"bad"), and on none when it is empty: a node with a bug and the same node
after the fix, as a user meets them.
"""

import os

from emitcli import Router

words = Router()


@words.node("word", entry_point=True)
def split(msg):
    yield from msg.line.split()


@words.node(("word", "length"), subscribe_to="split")
def count(msg):
    if msg.word == os.environ.get("EMIT_TEST_BAD_WORD", "bad"):
        raise ValueError(f"cannot count {msg.word!r}")
    return msg.word, len(msg.word)


@words.node("word", subscribe_to="count")
def shout(msg):
    if msg.length < 2:
        return None
    return msg.word.upper()


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
