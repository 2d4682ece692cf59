"""Graphs on RQRouter for the RQ tests; the tests set the Redis connection."""

from collections import Counter

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
