"""Graphs on RQRouter for the RQ tests; the tests set the Redis connection."""

from collections import Counter

from redis import Redis

from emitcli.router.rq import RQRouter

words = RQRouter(batch_size=3)
COUNTS: Counter[str] = Counter()


@words.node(("word",), entry_point=True)
def split(msg):
    yield from msg.document.strip().split(" ")


@words.node(("word", "count"), "split", queue="counting")
def tally(msg):
    if msg.word == "boom":
        raise ValueError("boom is not a word")
    COUNTS[msg.word] += 1
    return msg.word, COUNTS[msg.word]


big = RQRouter(serializer="msgpack")


@big.node(("n",), entry_point=True)
def double(msg):
    return msg.n * 2


# A node whose jobs go to a Redis of its own; the tests set both connections
# (this placeholder is never connected to).
far = RQRouter()


@far.node(("word",), entry_point=True)
def near_split(msg):
    yield from msg.document.split()


@far.node(("word", "length"), "near_split", queue="far", connection=Redis())
def far_measure(msg):
    return msg.word, len(msg.word)


@far.node(("line",), "far_measure")
def near_show(msg):
    return f"{msg.word}={msg.length}"
