"""``emit worker``: RQ workers with the graph loaded once, before any job.

One worker, or a pool of them forked from a process that imported the graph.
A worker listens on one Redis: the router's own by default, or that of the
nodes whose queues it is given, when they have a ``connection`` of their own.
Signals follow RQ's worker: the first SIGINT or SIGTERM lets the job in hand
finish, a second one (a second or more later) stops at once, and the job in
hand then ends failed, or requeued when its node has ``retry`` left.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from datetime import timedelta
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, SpawnWorker, Worker
from rq.job import Job
from rq.utils import now
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool

from .errors import EmitError
from .loader import load_router
from .node import NodeSpec
from .router.core import Router
from .router.rq import JOB_FUNCTION, RQRouter
from .router.rqbook import same_redis
from .router.rqjobs import horse_killed, preload

log = logging.getLogger(__name__)

#: How a spawning worker names its graph to its horses, which start afresh.
GRAPH_VARIABLE = "EMIT_WORKER_GRAPH"

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
        try:
            router.redis_connection = Redis.from_url(url)
        except ValueError as exc:
            from .inspection import mask_password  # which imports this module

            raise EmitError(f"not a Redis URL: {mask_password(url)} ({exc})") from None
    if router.redis_connection is None:
        raise EmitError("no Redis to use: pass -u URL or set EMIT_REDIS_URL")
    return router.redis_connection


def graph_queues(router: Router) -> list[str]:
    """Every queue the graph's nodes use, in registration order."""
    return list(dict.fromkeys(_queue(spec) for spec in router.nodes.values()))


def unheard_queues(router: RQRouter) -> list[str]:
    """The queues of the router's own Redis that no worker listens on, in graph order."""
    home, names = listening(router, [])
    heard = {name for worker in Worker.all(connection=home) for name in worker.queue_names()}
    return [name for name in names if name not in heard]


def listening(router: RQRouter, queues: Sequence[str]) -> tuple[Redis, list[str]]:
    """The Redis a worker for ``queues`` listens on, and the queues.

    Without queues: the router's own Redis, and the queues of the nodes whose
    jobs go there.  With queues: the Redis their nodes' jobs go to, which must
    be one.
    """
    home = router.redis_connection
    assert home is not None
    groups: dict[object, tuple[Redis, list[NodeSpec]]] = {}
    for spec in router.nodes.values():
        if queues and _queue(spec) not in queues:
            continue
        connection = router.connection_for(spec) or home
        where = "home" if same_redis(connection, home) else id(connection)
        groups.setdefault(where, (connection, []))[1].append(spec)

    if queues:
        if len(groups) > 1:
            nodes = "; ".join(
                ", ".join(spec.name for spec in specs) for _, specs in groups.values()
            )
            raise EmitError(
                f"the queues {', '.join(queues)} hold jobs on different Redis databases "
                f"(nodes {nodes}); start a worker for each, and give a node with a "
                "connection of its own a queue of its own"
            )
        return next(iter(groups.values()))[0] if groups else home, list(queues)

    away = [spec.name for where, (_, specs) in groups.items() if where != "home" for spec in specs]
    if away:
        log.info(
            "not listening for node(s) %s, whose jobs go to a Redis of their own: "
            "start a worker for their queues (emit worker LOCATOR QUEUE)",
            ", ".join(away),
        )
    return home, list(dict.fromkeys(_queue(spec) for spec in groups.get("home", (home, []))[1]))


def _queue(spec: NodeSpec) -> str:
    return str(spec.options.get("queue", "default"))


class _EmitJobsOnly(BaseWorker):
    """What emit adds to each RQ worker class: its own jobs only, and a cold stop that
    leaves no job behind in the started registry."""

    _cold_stop = False
    #: The locator of the graph this worker was started for.
    graph_locator: str | None = None

    def execute_job(self, job: Job, queue: Queue) -> Any:
        if job.func_name != JOB_FUNCTION:
            self.log.error("refused job %s: it runs %r, not an emit node", job.id, job.func_name)
            job.cancel()
            return None
        return super().execute_job(job, queue)

    def subscribe(self) -> None:
        # RQ's thread for its command channel waits up to 60 s for a message,
        # and counts on the reply to its UNSUBSCRIBE to wake it; when that
        # reply came before the wait began, the thread sleeps on, and recent
        # redis-py joins it with no time limit: a warm stop took a minute
        # (seen with redis-py 8.2 and RQ 3.0).  A wait of a second keeps a
        # stop prompt, at one wake-up a second.
        self.log.debug("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        # Ctrl-C reaches a pooled worker twice, from the terminal and from the
        # pool; like RQ, a repeat within a second is the same request.
        requested = self._shutdown_requested_date
        if self._cold_stop or (requested and now() - requested < timedelta(seconds=1)):
            return
        self._cold_stop = True
        self.log.warning("Worker %s: cold shut down", self.name)
        if self.horse_pid:
            # RQ would exit here and leave the job in the started registry
            # until it expires.  Killing only the horse lets the worker fail
            # (or retry) the job now, as for any horse that died, and then
            # leave its loop, since a stop was requested before.
            self.kill_horse()
            return
        # No horse: the job runs in this process, which the exception stops;
        # RQ records it as the job's failure.
        raise ColdStop(signum)


class ColdStop(SystemExit):
    """A second signal stopped the worker at once; in the job it ran itself, if any.

    Exits with status 0 like RQ's own cold stop, and names the signal in the
    failure recorded for that job.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum

    def __str__(self) -> str:
        return f"the worker was stopped at once by {signal.Signals(self.signum).name}"


class EmitWorker(_EmitJobsOnly, Worker):
    """RQ's forking worker: a new process for each job."""


class EmitSimpleWorker(_EmitJobsOnly, SimpleWorker):
    """RQ's simple worker: jobs run in the worker's own process."""


class EmitSpawnWorker(_EmitJobsOnly, SpawnWorker):
    """RQ's spawning worker, for where fork is unsafe; the horse pickles this class.

    Each horse is a new interpreter, which inherits none of the worker's
    state: it loads the worker's graph again, named in its environment, and
    connects it to the worker's Redis, so that ``-u`` and the refusal of
    other graphs' jobs hold in the horse too.
    """

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        if self.graph_locator:
            os.environ[GRAPH_VARIABLE] = self.graph_locator
        super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        locator = os.environ.get(GRAPH_VARIABLE)
        if locator:
            router = load_router(locator)
            if isinstance(router, RQRouter):
                router.redis_connection = self.connection
            preload(router, locator)
        super().main_work_horse(job, queue)


WORKER_CLASSES: dict[str, type[_EmitJobsOnly]] = {
    "forking": EmitWorker,
    "simple": EmitSimpleWorker,
    "spawn": EmitSpawnWorker,
}


def make_worker(
    router: RQRouter,
    locator: str,
    queues: Sequence[str],
    *,
    worker_class: str = "forking",
    name: str | None = None,
    connection: Redis | None = None,
) -> Any:
    """A worker of ``worker_class`` for ``queues`` (default: those of the router's own
    Redis), graph preloaded; on ``connection``, else as :func:`listening` finds."""
    preload(router, locator)
    cls = WORKER_CLASSES[worker_class]
    if connection is None:
        connection, names = listening(router, queues)
    else:
        names = list(queues)
    worker = cls(
        [Queue(q, connection=connection, serializer=router.serializer) for q in names],
        connection=connection,
        serializer=router.serializer,
        name=name,
        work_horse_killed_handler=horse_killed,
    )
    worker.graph_locator = locator
    return worker


class GraphPool(WorkerPool):
    """RQ's worker pool, its workers forked from this process with the graph loaded.

    The pool restarts a worker that quits (after ``max_jobs``, or that died)
    unless in burst mode.  On SIGINT or SIGTERM it passes a SIGINT to each
    worker, which stops as a lone worker does.  With ``with_scheduler`` each
    worker runs RQ's scheduler too, as in RQ's own pool; one at a time holds it.
    """

    def __init__(
        self,
        router: RQRouter,
        locator: str,
        queues: Sequence[str],
        *,
        workers: int,
        worker_class: str = "forking",
        name: str | None = None,
        max_jobs: int | None = None,
        with_scheduler: bool = False,
    ) -> None:
        preload(router, locator)
        connection, names = listening(router, queues)
        super().__init__(
            names,
            connection=connection,
            num_workers=workers,
            worker_class=WORKER_CLASSES[worker_class],
            serializer=router.serializer,
        )
        self.router = router
        self.locator = locator
        self.worker_class_name = worker_class
        self.prefix = name
        self.max_jobs = max_jobs
        self.with_scheduler = with_scheduler
        self.logging_level = "INFO"

    def start(self, burst: bool = False, logging_level: str = "INFO") -> None:
        self.logging_level = logging_level
        super().start(burst=burst, logging_level=logging_level)

    def start_worker(
        self,
        count: int | None = None,
        burst: bool = True,
        _sleep: float = 0,
        logging_level: str | None = None,
    ) -> None:
        # RQ's pool starts a replacement at its default level, INFO, whatever
        # -q or -v said for the first ones.
        level = logging_level or self.logging_level
        super().start_worker(count, burst=burst, _sleep=_sleep, logging_level=level)

    def handle_dead_worker(self, worker_data: Any) -> None:
        code = worker_data.process.exitcode
        if code and self.status != self.Status.STOPPED:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            self.log.warning(
                "worker %s (pid %d) died (%s); a new one takes its place",
                self._rq_name(worker_data.name),
                worker_data.pid,
                how,
            )
            # Its registration would say it is idle until it expires in minutes;
            # with Redis away, it expires as it would have.
            with contextlib.suppress(RedisError):
                dead = Worker.find_by_key(
                    Worker.redis_worker_namespace_prefix + self._rq_name(worker_data.name),
                    connection=self.connection,
                )
                if dead is not None:
                    dead.register_death()
        super().handle_dead_worker(worker_data)

    def _rq_name(self, name: str) -> str:
        # Each worker needs a name of its own, a restarted one too.
        return f"{self.prefix}-{name[:8]}" if self.prefix else name

    def get_worker_process(
        self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO"
    ) -> BaseProcess:
        name = self._rq_name(name)
        return multiprocessing.get_context("fork").Process(
            target=self._work, args=(name, burst, logging_level), name=f"emit worker {name}"
        )

    def _work(self, name: str, burst: bool, logging_level: str) -> None:
        # A restarted worker is forked with the pool's handlers, which would
        # stop its siblings; until its own are installed, it stops alone.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        worker = make_worker(
            self.router,
            self.locator,
            self._queue_names,
            worker_class=self.worker_class_name,
            name=name,
            connection=self.connection,
        )
        worker.work(
            burst=burst,
            max_jobs=self.max_jobs,
            logging_level=logging_level,
            with_scheduler=self.with_scheduler,
        )
