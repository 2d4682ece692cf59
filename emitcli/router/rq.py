"""Distribution on RQ: every hop a job, the messages for one node batched.

One RQ job per message costs milliseconds of worker overhead, far more than a
node usually takes, so the messages a job sends to one node travel together:
a job carries a batch (up to ``batch_size`` messages and ``max_message_bytes``)
and everything it sends is enqueued at its end, in one Redis transaction per
Redis (a node may have a ``connection`` of its own).  A batch is delivered at
least once: a job that dies is retried (``retry``) or failed as a whole.

Jobs name the function :func:`emitcli.router.rqjobs.run_batch`, the worker's
side, and carry JSON or msgpack, never pickle; a job naming anything that is
not a node of the graph is refused.  A tracked run (one ``emit run`` follows)
keeps its bookkeeping in the router's own Redis (:mod:`emitcli.router.rqbook`),
written in the same transaction as the sends there.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Callback, Queue, Retry
from rq.job import Job

from ..codec import serializer_for
from ..errors import EmitError, GraphError, MessageTooBigError, OptionError
from ..messages import ENTRY_POINT, Message
from ..node import NodeSpec
from .core import Router
from .rqbook import (
    BOOK_SCRIPT,
    DONE_FIELD,
    ERROR_TEXT_LIMIT,
    EVENTS_MAXLEN,
    RUN_TTL,
    failure_record,
    marks_of,
    run_keys,
    same_redis,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DEAD_AFTER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_TEXT_LIMIT",
    "FAILED_CALLBACK",
    "JOB_FUNCTION",
    "RECONNECT_FOR",
    "RUN_TTL",
    "MessageTooBigError",
    "RQRouter",
    "Sender",
    "retry_option",
    "run_keys",
]

log = logging.getLogger(__name__)

JOB_FUNCTION = "emitcli.router.rqjobs.run_batch"
FAILED_CALLBACK = "emitcli.router.rqjobs.batch_failed"
DEFAULT_BATCH_SIZE = 100
#: The largest message (its fields, serialised) a router sends unless told otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 8 * 2**20
#: Seconds without a heartbeat after which a running batch counts as dead.
DEFAULT_DEAD_AFTER = 10.0
#: Seconds a lost Redis connection is waited for before a send or a run gives up.
RECONNECT_FOR = 30.0


class RQRouter(Router):
    """A Router whose hops are RQ jobs.

    :param redis_connection: the Redis connection jobs are enqueued on (a
        node's ``connection`` option overrides it), and where a run followed
        by ``emit run`` keeps its bookkeeping.
    :param serializer: ``"json"`` (default) or ``"msgpack"``.
    :param batch_size: most messages one job carries (a node's ``batch_size``
        option overrides it).
    :param max_message_bytes: the largest message, serialised, that is sent;
        a bigger one is refused with its size and node.  A job carries at most
        this many bytes of messages, or one message.
    :param dead_after: seconds without a heartbeat after which a job of a
        followed run counts as dead, and is retried or failed.
    :param locator: how a worker finds this router (``app:router``); found by
        looking through the imported modules when not given.
    """

    node_options = frozenset(
        {"queue", "connection", "timeout", "result_ttl", "failure_ttl", "retry", "batch_size"}
    )

    def __init__(
        self,
        redis_connection: Redis | None = None,
        *args: Any,
        serializer: str = "json",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        dead_after: float = DEFAULT_DEAD_AFTER,
        locator: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("batch_size", batch_size), ("max_message_bytes", max_message_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GraphError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(dead_after, int | float) or not dead_after > 0:
            raise GraphError(f"dead_after must be a positive number of seconds, not {dead_after!r}")
        self.redis_connection = redis_connection
        self.serializer = serializer_for(serializer)
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self.dead_after = float(dead_after)
        self._locator = locator

    # Registration ----------------------------------------------------------

    def _check_options(self, name: str, options: Any) -> None:
        super()._check_options(name, options)
        queue = options.get("queue", "default")
        if not isinstance(queue, str) or not queue:
            raise OptionError(f"node {name!r}: queue must be a non-empty string, not {queue!r}")
        retry_option(name, options.get("retry"))
        connection = options.get("connection")
        if connection is not None and not isinstance(connection, Redis):
            raise OptionError(
                f"node {name!r}: connection must be a redis.Redis client "
                f"(Redis.from_url(...)), not {connection!r}"
            )
        for option in ("batch_size", "failure_ttl"):
            value = options.get(option, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OptionError(
                    f"node {name!r}: {option} must be a positive integer, not {value!r}"
                )

    def wrap_node(self, node: Any, options: dict[str, Any]) -> Any:
        """Give the node ``delay(**fields)``, which enqueues one message for it."""

        def delay(*args: Any, **kwargs: Any) -> list[Job]:
            message = self.get_message_from_call(*args, **kwargs)
            return self.enqueue(node.node_name, [message.__dict__])

        node.delay = delay
        return node

    def connection_for(self, spec: NodeSpec) -> Redis | None:
        """The Redis a node's jobs go to: its own ``connection``, else the router's."""
        connection = spec.options.get("connection")
        return self.redis_connection if connection is None else connection

    # Sending ---------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Job, ...]:  # type: ignore[override]
        """Enqueue one message for every entry point; return the jobs."""
        message = self.get_message_from_call(*args, **kwargs)
        entries = self.subscribers(ENTRY_POINT)
        if not entries:
            raise GraphError("the router has no entry point; mark a node with entry_point=True")
        jobs: list[Job] = []
        for name in entries:
            jobs += self.enqueue(name, [message.as_dict()])
        return tuple(jobs)

    def dispatch(self, origin: str, destination: str, message: Message) -> list[Job]:
        """Enqueue ``message`` for ``destination``, as sent by ``origin``."""
        return self.enqueue(destination, [message.__dict__], origin=origin)

    def enqueue(
        self,
        destination: str,
        messages: Iterable[dict[str, Any]],
        *,
        origin: str = ENTRY_POINT,
        run: str | None = None,
        track: bool = False,
    ) -> list[Job]:
        """Enqueue messages for one node as batched jobs; return the jobs.

        :raises MessageTooBigError: a message is over ``max_message_bytes``;
            nothing is enqueued.
        """
        spec = self._spec(destination)
        items = [[fields, origin, None, 0, None] for fields in messages]
        sender = Sender(self, run or uuid.uuid4().hex, track)
        sender.add(spec, items)
        return sender.send()

    # Finding the graph from a worker --------------------------------------

    @property
    def locator(self) -> str:
        """``module:attr`` by which a worker imports this router."""
        if self._locator is None:
            self._locator = _find_locator(self)
        return self._locator

    @locator.setter
    def locator(self, value: str) -> None:
        self._locator = value

    def check_sendable(self, spec: NodeSpec) -> None:
        """Refuse a node a worker could never import, before anything is enqueued."""
        if spec.name.startswith("__main__."):
            raise GraphError(
                f"node {spec.name!r} is defined in a script run as __main__, which an RQ worker "
                "cannot import; move it into a module and import that from the script"
            )


#: Called with the item and the error for a message too big to send.
Refuse = Callable[[list[Any], MessageTooBigError], None]
#: What one send enqueues: each node with its batches of items.
Plan = list[tuple[NodeSpec, list[list[list[Any]]]]]


class Sender:
    """Collects the messages a job (or the command line) sends, then enqueues them.

    Messages for one node are cut into batches.  The jobs for the router's
    own Redis go out in one transaction together with the run's bookkeeping,
    so a job's sends there are either all made or not at all; then those for
    each node with a ``connection`` of its own, one transaction per Redis.
    Those come second so that the run counts their jobs before any of them
    can end.

    :param job: the RQ job whose sends these are, if any: its end is booked
        once, and it never creates a run's bookkeeping Redis lost.
    :param refuse: what to do with a message over ``max_message_bytes``;
        by default :class:`MessageTooBigError` is raised before anything is sent.
    :param trace: the run is traced: its jobs tell of every hop, and the
        events collected in :attr:`events` go to the run's stream with the sends.
    """

    def __init__(
        self,
        router: RQRouter,
        run: str,
        track: bool,
        *,
        job: Job | None = None,
        refuse: Refuse | None = None,
        trace: bool = False,
    ) -> None:
        self.router = router
        self.run = run
        self.track = track
        self.trace = trace and track
        self.job = job
        self.refuse = refuse
        self.pending: dict[str, list[list[Any]]] = {}
        self.outputs: list[str] = []
        self.failures: list[str] = []
        #: Hop events (JSON objects) to publish with the next send.
        self.events: list[str] = []
        self.count = 0
        #: False once Redis answered that the run's bookkeeping is gone.
        self.run_known = True

    def add(self, spec: NodeSpec, items: list[list[Any]]) -> None:
        """Queue items (``[fields, origin, parent hop, hops, place]``) for ``spec``."""
        self.router.check_sendable(spec)
        self.pending.setdefault(spec.name, []).extend(items)
        self.count += len(items)

    def send(self, *, ended: bool = False) -> list[Job]:
        """Enqueue what was added; ``ended``: this send ends the sender's job."""
        nodes = self.router.nodes
        # Cut everything first, so that a refused message raises before any send.
        plan = [
            (nodes[name], self._batches(nodes[name], items)) for name, items in self.pending.items()
        ]
        home, away = self._by_redis(plan)

        jobs = self._send_home(home, ended, sum(len(batches) for _, batches in plan))
        for connection, part in away:
            jobs += self._send_away(connection, part)

        self.pending.clear()
        self.outputs.clear()
        self.failures.clear()
        self.events.clear()
        self.count = 0
        return jobs

    def _by_redis(self, plan: Plan) -> tuple[Plan, list[tuple[Redis, Plan]]]:
        """The plan split into the router's own Redis and each other one."""
        router_redis = self.router.redis_connection
        home: Plan = []
        away: dict[int, tuple[Redis, Plan]] = {}
        for spec, batches in plan:
            connection = self.router.connection_for(spec)
            if connection is None:
                raise EmitError("RQRouter has no redis_connection to enqueue on")
            if router_redis is not None and same_redis(connection, router_redis):
                home.append((spec, batches))
            else:
                away.setdefault(id(connection), (connection, []))[1].append((spec, batches))
        return home, list(away.values())

    def _send_home(self, plan: Plan, ended: bool, jobs: int) -> list[Job]:
        connection = self.router.redis_connection
        if not self.track and not plan:
            return []
        if connection is None:
            raise EmitError("RQRouter has no redis_connection to enqueue on")
        book = jobs if self.track else None
        return self._patiently(lambda: self._transaction(connection, plan, book, ended))

    def _send_away(self, connection: Redis, plan: Plan) -> list[Job]:
        try:
            return self._patiently(lambda: self._transaction(connection, plan))
        except RedisError as exc:
            if not self.track or self.job is None:
                raise
            # The run counts these jobs already: it hears they failed instead.
            self._unsent(plan, exc)
            return []

    def _transaction(
        self, connection: Redis, plan: Plan, book: int | None = None, ended: bool = False
    ) -> list[Job]:
        """Enqueue ``plan`` on ``connection``; with ``book``, count that many jobs for the run."""
        jobs: list[Job] = []
        with connection.pipeline(transaction=True) as pipe:
            for spec, batches in plan:
                jobs += self._enqueue(spec, batches, pipe)
            if book is not None:
                if self.events:
                    self._publish(pipe)
                self._book(pipe, book, ended, self.outputs, self.failures)
            results = pipe.execute()
        if book is not None and not results[-1]:
            self._run_gone()
        return jobs

    def _patiently(self, send: Callable[[], list[Job]]) -> list[Job]:
        """Send from a job, waiting out a Redis restart of up to ``RECONNECT_FOR`` seconds.

        A job that fails for want of Redis also leaves RQ unable to record
        that, and its worker quits; waiting keeps both.  Sending twice (when
        Redis applied the transaction but the answer was lost) duplicates
        messages, never the job's end: that is booked once.  The command line
        sends once; it waits for Redis while it follows the run.
        """
        if self.job is None:
            return send()
        give_up = time.monotonic() + RECONNECT_FOR
        pause = 0.25
        while True:
            try:
                return send()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + pause > give_up:
                    raise
                log.warning("lost Redis while sending (%s); retrying in %.2gs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 4.0)

    def _unsent(self, plan: Plan, error: RedisError) -> None:
        """Book the messages a node's own Redis did not take as failures of the run."""
        records = []
        for spec, batches in plan:
            text = f"not sent: node {spec.name!r} has its own Redis, which failed: {error}"
            log.error("run %s: %s", self.run, text)
            records += [
                failure_record(spec.name, type(error).__name__, text, item)
                for batch in batches
                for item in batch
            ]
        assert self.router.redis_connection is not None
        unsent = sum(len(batches) for _, batches in plan)
        self._book(self.router.redis_connection, -unsent, False, [], records)

    def _batches(self, spec: NodeSpec, items: list[list[Any]]) -> list[list[list[Any]]]:
        size = spec.options.get("batch_size", self.router.batch_size)
        limit = self.router.max_message_bytes
        dumps = self.router.serializer.dumps
        batches = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            # One serialisation of the whole batch usually shows every message fits.
            if len(dumps([item[0] for item in chunk])) <= limit:
                batches.append(chunk)
            else:
                batches += self._cut_by_bytes(spec, chunk, limit)
        return batches

    def _cut_by_bytes(
        self, spec: NodeSpec, chunk: list[list[Any]], limit: int
    ) -> list[list[list[Any]]]:
        dumps = self.router.serializer.dumps
        batches: list[list[list[Any]]] = []
        batch: list[list[Any]] = []
        total = 0
        for item in chunk:
            size = len(dumps(item[0]))
            if size > limit:
                error = MessageTooBigError(item[1], spec.name, size, limit)
                if self.refuse is None:
                    raise error
                self.refuse(item, error)
                continue
            if batch and total + size > limit:
                batches.append(batch)
                batch, total = [], 0
            batch.append(item)
            total += size
        return [*batches, batch] if batch else batches

    def _enqueue(self, spec: NodeSpec, batches: list[list[list[Any]]], pipe: Any) -> list[Job]:
        router = self.router
        options = spec.options
        queue = Queue(
            options.get("queue", "default"),
            connection=router.connection_for(spec),
            serializer=router.serializer,
        )
        retry = retry_option(spec.name, options.get("retry"))
        datas = [
            Queue.prepare_data(
                JOB_FUNCTION,
                args=(self._payload(spec, batch),),
                timeout=options.get("timeout"),
                result_ttl=options.get("result_ttl", 500),
                failure_ttl=options.get("failure_ttl", RUN_TTL),
                retry=retry,
                on_failure=Callback(FAILED_CALLBACK),
                description=f"emit {spec.name} x{len(batch)}",
            )
            for batch in batches
        ]
        return queue.enqueue_many(datas, pipeline=pipe)

    def _payload(self, spec: NodeSpec, items: list[list[Any]]) -> dict[str, Any]:
        payload = {
            "graph": self.router.locator,
            "node": spec.name,
            "run": self.run,
            "track": self.track,
            "items": items,
        }
        if self.trace:
            payload["trace"] = True
        return payload

    def _publish(self, pipe: Any) -> None:
        """Add the collected events to the run's stream, as one entry, in ``pipe``."""
        key = run_keys(self.run)["events"]
        pipe.xadd(key, {"events": f"[{','.join(self.events)}]"}, maxlen=EVENTS_MAXLEN)
        pipe.expire(key, RUN_TTL)

    def _book(
        self, target: Any, change: int, ended: bool, lines: list[str], failures: list[str]
    ) -> None:
        """Count ``change`` more jobs pending, and the job's end when ``ended``, on
        ``target`` (the router's Redis, or a transaction of it)."""
        keys = run_keys(self.run)
        job = self.job
        home = self.router.redis_connection
        assert home is not None
        marks, _ = marks_of(self.run, job.id, job.connection, home) if job else ("", "")
        target.eval(
            BOOK_SCRIPT,
            5,
            keys["pending"],
            keys["out"],
            keys["failed"],
            keys["running"],
            marks,
            "more" if job is not None else "new",
            change,
            (job.id if job is not None else "-") if ended else "",
            RUN_TTL,
            len(lines),
            DONE_FIELD,
            *lines,
            *failures,
        )

    def _run_gone(self) -> None:
        if self.run_known:
            log.warning(
                "run %s is gone from Redis (restarted without persistence, or its keys "
                "expired); what this job sent is not counted",
                self.run,
            )
        self.run_known = False


def retry_option(node: str, value: Any) -> Retry | None:
    """A node's ``retry``: a count, ``(count, intervals)``, or an rq ``Retry``."""
    if value is None or isinstance(value, Retry):
        return value
    try:
        if isinstance(value, int):
            return Retry(max=value)
        count, intervals = value
        return Retry(max=count, interval=intervals)
    except (TypeError, ValueError) as exc:
        raise OptionError(
            f"node {node!r}: retry must be a count, (count, intervals) or rq.Retry, not {value!r} "
            f"({exc})"
        ) from None


def _find_locator(router: Router) -> str:
    for name, module in list(sys.modules.items()):
        for attr, value in list(vars(module).items()) if module else ():
            if value is router and not attr.startswith("_"):
                if name == "__main__":
                    continue
                return f"{name}:{attr}"
    raise GraphError(
        "cannot tell how an RQ worker would import this router: it is not a top-level name "
        "of any imported module other than __main__; define it in a module or pass locator="
    )
