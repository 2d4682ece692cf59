"""A graph for the ``emit inspect -u`` tests: three nodes, each on a queue of its own.

Tests set the Redis connection; a worker process gets its own from ``-u``.
``ship`` takes longer than its timeout for the order ``late``, so RQ fails
that job; ``pack`` holds the order ``hold`` until the test releases it, so
that a worker is seen with a job in hand.
"""

import time

from emitcli.router.rq import RQRouter

#: ``pack`` pushes here when it holds an order, and waits for a push to RELEASE.
HOLDING = "live_graphs:holding"
RELEASE = "live_graphs:release"

shop = RQRouter()


@shop.node(("order",), entry_point=True, queue="orders")
def take(msg):
    return msg.order


@shop.node(("order",), "take", queue="shipping", timeout=1)
def ship(msg):
    if msg.order == "late":
        time.sleep(30)  # past the node's timeout of one second
    return msg.order


@shop.node(("order",), "ship")
def pack(msg):
    if msg.order == "hold":
        shop.redis_connection.rpush(HOLDING, "1")
        shop.redis_connection.blpop(RELEASE, timeout=60)
    return msg.order
