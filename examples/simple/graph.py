"""The quickstart: count the words of a document.

Run it as the 2013 library did, the whole of stdin as one document:

    echo "the rain in spain falls mainly on the plain" | python examples/simple/graph.py

or as a shell filter, each line a document, one JSON line per word counted:

    emit run examples.simple.graph:router --field document < some.txt

The nodes report what they do through logging, which the script sends to
stdout; under ``emit run`` nobody configures it, so the nodes stay quiet.
"""

import logging
import sys
from collections import Counter

from emitcli import Router

router = Router()
log = logging.getLogger(__name__)


def prefix(name):
    return f"{__name__}.{name}"


@router.node(("word",), entry_point=True)
def words(msg):
    log.info("got document")
    for word in msg.document.strip().split(" "):
        yield word


WORDS = Counter()


@router.node(("word", "count"), prefix("words"))
def count_word(msg):
    log.info("got word (%s)", msg.word)
    WORDS.update([msg.word])
    return msg.word, WORDS[msg.word]


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout)
    router(document=sys.stdin.read())

    print()
    print("Top 5 words:")
    for word, count in WORDS.most_common(5):
        print(f"    {word}: {count}")
