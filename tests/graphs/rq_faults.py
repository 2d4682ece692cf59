"""Graphs for the RQ fault tests: nodes that stall, run late, fail or send too much.

Tests set the Redis connection (workers get theirs from -u).  A node that
stalls records its process id first, so that a test knows whom to kill, and
counts its attempts per message, so that a retry can go through.
"""

import os
import time

from emitcli.router.rq import RQRouter

PIDS = "rq_faults:pids"


def attempt(router: RQRouter, what: object) -> int:
    """Count one more attempt at ``what``; return the count."""
    return int(router.redis_connection.incr(f"rq_faults:attempts:{what}"))


def stall(router: RQRouter) -> None:
    """Say which process this is, then take far longer than any test waits."""
    router.redis_connection.rpush(PIDS, os.getpid())
    time.sleep(120)


# Retried once: the first attempt stalls until its worker is killed, the retry goes through.
retried = RQRouter(dead_after=2)


@retried.node(("n",), entry_point=True, retry=1)
def stall_once(msg):
    if attempt(retried, msg.n) == 1:
        stall(retried)
    return msg.n


# Not retried: the job of a killed worker fails, and the run reports it.
unretried = RQRouter(dead_after=2)


@unretried.node(("n",), entry_point=True)
def stall_always(msg):
    stall(unretried)
    return msg.n


# Nodes the tests enqueue to one by one, with in-process workers.
flaky = RQRouter()


@flaky.node(("n",), timeout=1, retry=(2, [0, 0]))
def always_late(msg):
    attempt(flaky, "always_late")
    time.sleep(10)
    return msg.n


@flaky.node(("n",), timeout=1, retry=2)
def late_once(msg):
    if attempt(flaky, "late_once") == 1:
        time.sleep(10)
    return msg.n


@flaky.node(("n",), timeout=1)
def late_unretried(msg):
    time.sleep(10)
    return msg.n


@flaky.node(("n",), retry=2)
def raises_a_lot(msg):
    attempt(flaky, "raises_a_lot")
    raise ValueError("why: " + "!" * 10_000)


# A small limit, so that tests can send a message over it.
sizes = RQRouter(max_message_bytes=1000)


@sizes.node(("text",), entry_point=True)
def inflate(msg):
    return "x" * int(msg.size)


@sizes.node(("length",), "inflate")
def measure(msg):
    return len(msg.text)


# The plainest graph, for the tests where Redis goes away.
echo = RQRouter()


@echo.node(("n",), entry_point=True)
def repeat(msg):
    return msg.n


@echo.node(("n",), entry_point=True)
def doze(msg):
    time.sleep(float(msg.n))
    return msg.n


# Retried a second after its first attempt times out: only RQ's scheduler
# puts such a retry back on its queue.
waiting = RQRouter()


@waiting.node(("n",), entry_point=True, timeout=1, retry=(1, [1]))
def late_then_on_time(msg):
    if attempt(waiting, msg.n) == 1:
        time.sleep(10)
    return msg.n
