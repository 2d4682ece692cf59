"""The quickstart: count the words of a document.

Run it as the 2013 library did, the whole of stdin as one document:

    echo "the rain in spain falls mainly on the plain" | python examples/simple/graph.py

or as a shell filter, each line a document, one JSON line per word counted:

    emit run examples.simple.graph:router --field document < some.txt
"""

import sys
from collections import Counter

from emitcli import Router

router = Router()


def prefix(name):
    return f"{__name__}.{name}"


@router.node(("word",), entry_point=True)
def words(msg):
    print("got document")
    for word in msg.document.strip().split(" "):
        yield word


WORDS = Counter()


@router.node(("word", "count"), prefix("words"))
def count_word(msg):
    print(f"got word ({msg.word})")
    WORDS.update([msg.word])
    return msg.word, WORDS[msg.word]


if __name__ == "__main__":
    router(document=sys.stdin.read())

    print()
    print("Top 5 words:")
    for word, count in WORDS.most_common(5):
        print(f"    {word}: {count}")
