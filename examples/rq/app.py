"""The RQ router of the word-count example: where to enqueue, where nodes live.

``emit worker -u URL`` and ``emit run --backend rq -u URL`` replace this
connection with the one the URL names.
"""

import os

from redis import Redis

from emitcli.router.rq import RQRouter

router = RQRouter(
    redis_connection=Redis.from_url(os.environ.get("EMIT_REDIS_URL", "redis://localhost:6379")),
    node_modules=["examples.rq.tasks"],
)
