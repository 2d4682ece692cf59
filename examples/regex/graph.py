"""Regex routing: a notifier that subscribes to every node with ``.+``.

The 2013 example counted in Redis and published to Redis pub/sub; this one
keeps the counts in memory and writes each notification to stderr, so it runs
in-process with nothing to start:

    echo '?a=1&b=2&a=1' | emit run examples.regex.graph:router --field querystring \\
        --output count_keyval

``notify_on_emit`` sees every message: the input (origin ``__entry_point``),
each pair from ``parse_querystring`` and each count from ``count_keyval``.
"""

import sys
from collections import Counter

from emitcli import NoResult, Router

router = Router()

COUNTS = Counter()


def prefix(name):
    return f"{__name__}.{name}"


@router.node(("key", "value"), entry_point=True)
def parse_querystring(msg):
    "parse a querystring into keys and values"
    for part in msg.querystring.strip().lstrip("?").split("&"):
        key, _, value = part.partition("=")
        yield key, value


@router.node(("key", "value", "count"), prefix("parse_querystring"))
def count_keyval(msg):
    COUNTS[msg.key, msg.value] += 1
    return msg.key, msg.value, COUNTS[msg.key, msg.value]


@router.node((), ".+")
def notify_on_emit(msg):
    print(f"notify_on_emit.{msg._origin} {msg.as_json()}", file=sys.stderr)
    return NoResult


if __name__ == "__main__":
    router(querystring="?a=1&b=2&c=3")
