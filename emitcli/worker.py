"""``emit worker``: an RQ worker with the graph loaded once, before any job."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker, SpawnWorker, Worker
from rq.job import Job

from .errors import EmitError
from .router.core import Router
from .router.rq import JOB_FUNCTION, RQRouter, preload

WORKER_CLASSES: dict[str, type[Worker] | type[SimpleWorker]] = {
    "forking": Worker,
    "simple": SimpleWorker,
    "spawn": SpawnWorker,
}

#: Where the Redis URL comes from when ``-u`` is not given, first found wins.
URL_VARIABLES = ("EMIT_REDIS_URL", "RQ_REDIS_URL", "REDIS_URL")


def redis_url(url: str | None) -> str | None:
    """``-u`` if given, else the first of the URL environment variables set."""
    if url:
        return url
    return next((os.environ[v] for v in URL_VARIABLES if os.environ.get(v)), None)


def connect(router: Router, url: str | None) -> Redis:
    """The connection to use: ``url`` (which then replaces the router's own), or the router's."""
    if not isinstance(router, RQRouter):
        raise EmitError(f"the graph's router is a {type(router).__name__}; RQ needs an RQRouter")
    if url:
        router.redis_connection = Redis.from_url(url)
    if router.redis_connection is None:
        raise EmitError("no Redis to use: pass -u URL or set EMIT_REDIS_URL")
    return router.redis_connection


def graph_queues(router: Router) -> list[str]:
    """Every queue the graph's nodes use, in registration order."""
    names = [spec.options.get("queue", "default") for spec in router.nodes.values()]
    return list(dict.fromkeys(names))


def make_worker(
    router: RQRouter,
    locator: str,
    queues: Sequence[str],
    *,
    worker_class: str = "forking",
    name: str | None = None,
) -> Any:
    """A worker of ``worker_class`` for ``queues`` (default: all the graph's), graph preloaded."""
    preload(router, locator)
    cls = _guarded(WORKER_CLASSES[worker_class])
    connection = router.redis_connection
    queue_objects = [
        Queue(q, connection=connection, serializer=router.serializer)
        for q in (queues or graph_queues(router))
    ]
    return cls(queue_objects, connection=connection, serializer=router.serializer, name=name)


def _guarded(base: type[Any]) -> type[Any]:
    """The worker class, refusing jobs that are not emit batches before they run."""

    class EmitWorker(base):
        def execute_job(self, job: Job, queue: Queue) -> Any:
            if job.func_name != JOB_FUNCTION:
                self.log.error(
                    "refused job %s: it runs %r, not an emit node", job.id, job.func_name
                )
                job.cancel()
                return None
            return super().execute_job(job, queue)

    EmitWorker.__name__ = f"Emit{base.__name__}"
    return EmitWorker
