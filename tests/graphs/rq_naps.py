"""A graph whose nodes nap, for the tests that signal real ``emit worker`` processes.

Each node says in Redis when it starts and when it ends, so a test can signal
a worker that has a job in hand and then tell whether that job finished.
"""

import time

from emitcli.router.rq import RQRouter

naps = RQRouter()
STARTED = "naps:started"
DONE = "naps:done"


def _nap(msg):
    naps.redis_connection.rpush(STARTED, msg.n)
    time.sleep(msg.seconds)
    naps.redis_connection.rpush(DONE, msg.n)
    return msg.n


@naps.node(("n",), entry_point=True)
def nap(msg):
    return _nap(msg)


@naps.node(("n",), retry=1)
def nap_with_retry(msg):
    return _nap(msg)
