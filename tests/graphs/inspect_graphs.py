"""Graphs for the ``emit inspect`` tests: a clean one, and one per problem.

Nodes are registered by name (``app.read``, ``app.clean``...) so that the
tests can say which node a problem names; each graph holds the one problem
its name says and nothing else wrong.
"""

from redis import Redis
from rq import Retry

from emitcli import Router
from emitcli.router.rq import RQRouter


def relay(msg):
    return msg.text


def graph(*nodes, router=None):
    """A router with these nodes: (name, subscribe_to, entry_point, ignore and options)."""
    router = router if router is not None else Router()
    for name, subscribe_to, keywords in nodes:
        options = dict(keywords)
        entry_point = options.pop("entry_point", False)
        ignore = options.pop("ignore", None)
        router.register(name, relay, ("text",), subscribe_to, entry_point, ignore, options=options)
    return router


ENTRY = {"entry_point": True}

# Nothing wrong: the ".+" auditor matches the input too, and its ignore
# pattern removes a node it would otherwise hear.
clean = graph(
    ("app.read", None, ENTRY),
    ("app.clean", "read", {}),
    ("app.store", "clean", {}),
    ("app.audit", ".+", {"ignore": "clean"}),
)

# "raed" is a typo: it matches no node; "read" still connects app.clean.
typo = graph(
    ("app.read", None, ENTRY),
    ("app.clean", ["read", "raed"], {}),
)

# A node subscribed only to its own name: patterns never subscribe a node to itself.
own_tail = graph(
    ("app.read", None, ENTRY),
    ("app.clean", ["read", "clean"], {}),
)

# The ignore pattern "raed" matches no node.
stale_ignore = graph(
    ("app.read", None, ENTRY),
    ("app.clean", ".+", {"ignore": "raed"}),
)

# app.orphan has no route into it, app.after_orphan only one from app.orphan.
stranded = graph(
    ("app.read", None, ENTRY),
    ("app.orphan", None, {}),
    ("app.after_orphan", "orphan", {}),
)

# One loop, ping -> pong -> ping, fed by the entry point.
loop = graph(
    ("app.read", None, ENTRY),
    ("app.ping", ["read", "pong"], {}),
    ("app.pong", "ping", {}),
)

# Two separate loops: reported in the order their first nodes were registered.
two_loops = graph(
    ("app.read", None, ENTRY),
    ("app.tick", ["read", "tock"], {}),
    ("app.tock", "tick", {}),
    ("app.left", ["read", "right"], {}),
    ("app.right", "left", {}),
)

# Three nodes that each hear everything: six routes among three nodes, so
# more loops than the one reported.
tangle = graph(
    ("app.a", ".+", {}),
    ("app.b", ".+", {}),
    ("app.c", ".+", {}),
)

# Two nodes whose last name part is "parse": the pattern "parse" hears both.
twins = graph(
    ("app.read", None, ENTRY),
    ("app.csv.parse", "read", {}),
    ("app.json.parse", "read", {}),
)

# No node receives the input.
no_entry = graph(
    ("app.read", None, {}),
    ("app.clean", "read", {}),
)

# No node marked as an entry point, but ".+" hears the input: not a problem.
catch_all_entry = graph(
    ("app.listen", ".+", {}),
)

# RQ options of every kind, one of them a connection with a password.
rq_options = graph(
    ("app.read", None, {**ENTRY, "queue": "high", "timeout": 30}),
    ("app.clean", "read", {"retry": (3, [1, 5]), "batch_size": 10}),
    (
        "app.store",
        "clean",
        {"retry": Retry(max=2), "connection": Redis.from_url("redis://:s3cret@localhost:6390/2")},
    ),
    router=RQRouter(max_hops=7),
)
