"""Distribution on RQ: every hop a job, the messages for one node batched.

One RQ job per message costs milliseconds of worker overhead, far more than a
node usually takes, so the messages a job sends to one node travel together:
a job carries a batch (up to ``batch_size`` messages and ``max_message_bytes``)
and everything it sends is enqueued at its end, in one Redis transaction.  A
batch is delivered at least once: a job that dies is retried (``retry``) or
failed as a whole.

Jobs name the function :func:`run_batch` and carry JSON or msgpack, never
pickle; a job naming anything that is not a node of the graph is refused.

A tracked run (one ``emit run`` follows) keeps its bookkeeping in Redis keys
(:func:`run_keys`), written by Lua scripts so that a job's end is counted once
however many attempts of it, or reports of its death, arrive.  While a job of
such a run works, a thread of its process keeps an alive key from expiring, so
the command line can tell a dead worker from a slow node within ``dead_after``
seconds rather than the minutes RQ's own heartbeats take.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from types import GeneratorType
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Callback, Queue, Retry
from rq.exceptions import AbandonedJobError
from rq.job import Job, get_current_job
from rq.timeouts import JobTimeoutException

from ..codec import JSONSerializer, serializer_for
from ..errors import EmitError, GraphError, HopLimitError, OptionError
from ..messages import ENTRY_POINT, Message
from ..node import NodeSpec
from .core import Router

log = logging.getLogger(__name__)

JOB_FUNCTION = "emitcli.router.rq.run_batch"
FAILED_CALLBACK = "emitcli.router.rq.batch_failed"
DEFAULT_BATCH_SIZE = 100
#: The largest message (its fields, serialised) a router sends unless told otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 8 * 2**20
#: Seconds without a heartbeat after which a running batch counts as dead.
DEFAULT_DEAD_AFTER = 10.0
#: How long a run's bookkeeping keys, and RQ's record of a failed job, live in Redis.
RUN_TTL = 24 * 3600
#: Seconds a lost Redis connection is waited for before a send or a run gives up.
RECONNECT_FOR = 30.0
#: Most characters of an error text a failure record keeps.
ERROR_TEXT_LIMIT = 2000

# A job of a worker that dies with an endless generator in hand must not hold
# everything it produced in memory: past this many messages it sends early.
_FLUSH_AFTER = 10

#: The field of an RQ job's hash that marks the job's end as booked, ``sent`` or
#: ``failed``.  It lives in the job's own hash so that it expires with the job
#: and costs the run nothing.
DONE_FIELD = "emit:done"
#: The field of an RQ job's hash that names the attempt running it.
ATTEMPT_FIELD = "emit:attempt"

# Lua helpers shared by the scripts: RPUSH a range of ARGV in bounded chunks
# (unpack has a stack limit), and refresh the expiry of the bookkeeping keys.
_LUA_HELPERS = """
local function push(key, first, last)
  for i = first, last, 1000 do
    redis.call('rpush', key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
local function touch(ttl, ...)
  for _, key in ipairs({...}) do redis.call('expire', key, ttl) end
end
"""

# A job of a tracked run starts.  KEYS: pending, running, alive, job hash.
# ARGV: job id, what the attempt is (JSON), alive key's life in ms, ttl, done
# field, attempt field, attempt id.  A run Redis no longer knows (restarted
# without persistence) is not revived, and a job whose sends were made (its
# worker killed before RQ heard) is not run twice; a failed one requeued by
# hand runs, but its end is not counted again.  The attempt id goes into
# the job's hash too, where the next attempt replaces it: RQ rewrites the
# job's own fields (started_at among them) when it handles a failure.
_START = """
if redis.call('exists', KEYS[1]) == 0 then return 'gone' end
if redis.call('hget', KEYS[4], ARGV[5]) == 'sent' then return 'done' end
redis.call('hset', KEYS[4], ARGV[6], ARGV[7])
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('expire', KEYS[2], ARGV[4])
redis.call('set', KEYS[3], '1', 'PX', ARGV[3])
return 'run'
"""

# One send of a tracked run.  KEYS: pending, out, failed, running, job hash
# ('' for a send that ends no RQ job).  ARGV: 'new' (the command line, which
# may create the run) or 'more', jobs enqueued, job id ('' when the send ends
# no job), ttl, number of sink lines, then the sink lines and failure records.
_BOOK = (
    _LUA_HELPERS
    + """
if ARGV[1] ~= 'new' and redis.call('exists', KEYS[1]) == 0 then return 0 end
local change = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  redis.call('hdel', KEYS[4], ARGV[3])
  if KEYS[5] == '' or redis.call('exists', KEYS[5]) == 0
      or redis.call('hsetnx', KEYS[5], ARGV[6], 'sent') == 1 then
    change = change - 1
  end
end
if change ~= 0 then redis.call('incrby', KEYS[1], change) end
local lines = tonumber(ARGV[5])
push(KEYS[2], 7, 6 + lines)
push(KEYS[3], 7 + lines, #ARGV)
touch(ARGV[4], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)

# A job of a tracked run ends failed.  KEYS: pending, failed, running, job hash.
# ARGV: job id, ttl, done field, failure records.  Booked once: RQ calls the
# failure callback before it decides to retry, a worker's cleanup and the
# command line may both find the same dead job.
_FAIL = (
    _LUA_HELPERS
    + """
redis.call('hdel', KEYS[3], ARGV[1])
if redis.call('exists', KEYS[1]) == 0 then return 0 end
if redis.call('hsetnx', KEYS[4], ARGV[3], 'failed') == 0 then return 0 end
redis.call('decr', KEYS[1])
push(KEYS[2], 4, #ARGV)
touch(ARGV[2], KEYS[1], KEYS[2])
return 1
"""
)


class MessageTooBigError(EmitError):
    """A message is bigger, serialised, than the router's ``max_message_bytes``.

    Raised (or reported, in a run) before anything of its batch is enqueued;
    the message is never truncated.
    """

    def __init__(self, sender: str, node: str, size: int, limit: int) -> None:
        self.sender = sender
        self.node = node
        self.size = size
        self.limit = limit
        what = (
            f"an input record for node {node!r}"
            if sender == ENTRY_POINT
            else f"node {sender!r} sent a message to {node!r} that"
        )
        super().__init__(
            f"{what} is {_bytes(size)}, over the limit of {_bytes(limit)} "
            "(RQRouter max_message_bytes); it was not sent"
        )


class RQRouter(Router):
    """A Router whose hops are RQ jobs.

    :param redis_connection: the Redis connection jobs are enqueued on (a
        node's ``connection`` option overrides it).
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


class Sender:
    """Collects the messages a job (or the command line) sends, then enqueues them.

    Messages for one node are cut into batches; all jobs go out in one Redis
    transaction together with the run's bookkeeping, so a job's sends are
    either all made or not at all.

    :param job: the RQ job whose sends these are, if any: its end is booked
        once, and it never creates a run's bookkeeping Redis lost.
    :param refuse: what to do with a message over ``max_message_bytes``;
        by default :class:`MessageTooBigError` is raised before anything is sent.
    """

    def __init__(
        self,
        router: RQRouter,
        run: str,
        track: bool,
        *,
        job: Job | None = None,
        refuse: Refuse | None = None,
    ) -> None:
        self.router = router
        self.run = run
        self.track = track
        self.job = job
        self.refuse = refuse
        self.pending: dict[str, list[list[Any]]] = {}
        self.outputs: list[str] = []
        self.failures: list[str] = []
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
        router = self.router
        connection = router.redis_connection
        if connection is None:
            raise EmitError("RQRouter has no redis_connection to enqueue on")
        # Cut everything first, so that a refused message raises before any send.
        specs = [router.nodes[name] for name in self.pending]
        plan = [(spec, self._batches(spec, self.pending[spec.name])) for spec in specs]
        if self.job is None:
            jobs = self._transaction(connection, plan, ended)
        else:
            jobs = self._patiently(connection, plan, ended)
        self.pending.clear()
        self.outputs.clear()
        self.failures.clear()
        self.count = 0
        return jobs

    def _transaction(self, connection: Redis, plan: list[Any], ended: bool) -> list[Job]:
        jobs: list[Job] = []
        with connection.pipeline(transaction=True) as pipe:
            for spec, batches in plan:
                jobs += self._enqueue(spec, batches, pipe)
            if self.track:
                self._book(pipe, len(jobs), ended)
            results = pipe.execute()
        if self.track and not results[-1]:
            self._run_gone()
        return jobs

    def _patiently(self, connection: Redis, plan: list[Any], ended: bool) -> list[Job]:
        """Send from a job, waiting out a Redis restart of up to ``RECONNECT_FOR`` seconds.

        A job that fails for want of Redis also leaves RQ unable to record
        that, and its worker quits; waiting keeps both.  Sending twice (when
        Redis applied the transaction but the answer was lost) duplicates
        messages, never the job's end: that is booked once.
        """
        give_up = time.monotonic() + RECONNECT_FOR
        pause = 0.25
        while True:
            try:
                return self._transaction(connection, plan, ended)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + pause > give_up:
                    raise
                log.warning("lost Redis while sending (%s); retrying in %.2gs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 4.0)

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
            connection=options.get("connection", router.redis_connection),
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
        return {
            "graph": self.router.locator,
            "node": spec.name,
            "run": self.run,
            "track": self.track,
            "items": items,
        }

    def _book(self, pipe: Any, jobs: int, ended: bool) -> None:
        keys = run_keys(self.run)
        job = self.job
        pipe.eval(
            _BOOK,
            5,
            keys["pending"],
            keys["out"],
            keys["failed"],
            keys["running"],
            job.key if job is not None else "",
            "more" if job is not None else "new",
            jobs,
            (job.id if job is not None else "-") if ended else "",
            RUN_TTL,
            len(self.outputs),
            DONE_FIELD,
            *self.outputs,
            *self.failures,
        )

    def _run_gone(self) -> None:
        if self.run_known:
            log.warning(
                "run %s is gone from Redis (restarted without persistence, or its keys "
                "expired); what this job sent is not counted",
                self.run,
            )
        self.run_known = False


# The worker's side ----------------------------------------------------------

_graphs: dict[str, Router] = {}
_preloaded: str | None = None


def preload(router: Router, locator: str) -> None:
    """Make this process run ``router``'s jobs, and refuse jobs of any other graph."""
    global _preloaded
    router.resolve_node_modules()
    if isinstance(router, RQRouter):
        router.locator = locator
    _graphs[locator] = router
    _preloaded = locator


def run_batch(payload: dict[str, Any]) -> dict[str, int]:
    """The RQ job: run one node on a batch of messages and send on what it returns."""
    router = _graph(payload["graph"])
    spec = router.nodes.get(payload["node"])
    if spec is None:
        raise EmitError(
            f"refused: job names {payload['node']!r}, which is not a node of {payload['graph']!r}"
        )
    return Batch(router, spec, payload).run()


def batch_failed(job: Job, connection: Redis, kind: type, value: BaseException, tb: Any) -> None:
    """RQ's failure callback: a batch that will not be retried is reported to its run.

    RQ calls it before it decides to retry, for a job that raised, timed out
    or was found abandoned (its worker died); with retries left it only logs.
    """
    payload = job.args[0]
    text = failure_text(kind, value)
    retrying = bool(job.retries_left and job.retries_left > 0)
    if retrying:
        log.warning(
            "job %s for node %r failed (%s); RQ retries it (retries left: %d, this one included)",
            job.id,
            payload["node"],
            text,
            job.retries_left,
        )
    else:
        log.error("job %s for node %r failed: %s", job.id, payload["node"], text)
    if not payload.get("track"):
        return
    if retrying:
        connection.hdel(run_keys(payload["run"])["running"], job.id)
        return
    report_failure(job, connection, kind.__name__, text)


def failure_text(kind: type, value: BaseException) -> str:
    """How a job-level failure reads in its messages' failure records."""
    if issubclass(kind, AbandonedJobError):
        return "worker died: the worker running this batch stopped before finishing it"
    if issubclass(kind, JobTimeoutException):
        return f"timed out: {value}"
    return f"{kind.__name__}: {value}" if str(value) else kind.__name__


def report_failure(job: Job, connection: Redis, kind: str, text: str) -> bool:
    """Book a failed job's messages as failures of its run, once; True if this call did."""
    payload = job.args[0]
    keys = run_keys(payload["run"])
    records = [_failure(payload["node"], kind, text, item) for item in payload["items"]]
    booked = connection.eval(
        _FAIL,
        4,
        keys["pending"],
        keys["failed"],
        keys["running"],
        job.key,
        job.id,
        RUN_TTL,
        DONE_FIELD,
        *records,
    )
    return bool(booked)


def _graph(locator: str) -> Router:
    router = _graphs.get(locator)
    if router is not None:
        return router
    from ..loader import load_router

    router = load_router(locator)
    if _preloaded is not None:
        if router is not _graphs[_preloaded]:
            # Another name for the same router (app:router, graph:router) is
            # fine; another graph is not what this worker was started for.
            raise EmitError(
                f"refused: this worker runs the graph {_preloaded!r}, the job names {locator!r}"
            )
        _graphs[locator] = router
        return router
    router.resolve_node_modules()
    if isinstance(router, RQRouter):
        router.locator = locator
    _graphs[locator] = router
    return router


class Batch:
    """One job's work: each message through the node, what it sends collected.

    An exception a node raises fails that message only; a timeout fails the
    job (RQ then retries or fails the whole batch).
    """

    def __init__(self, router: Router, spec: NodeSpec, payload: dict[str, Any]) -> None:
        if not isinstance(router, RQRouter):
            raise EmitError(f"{payload['graph']!r} is a {type(router).__name__}, not an RQRouter")
        self.router = router
        self.spec = spec
        self.payload = payload
        self.job = get_current_job()
        self.job_id = self.job.id if self.job is not None else uuid.uuid4().hex
        self.sender = Sender(
            router,
            payload["run"],
            bool(payload.get("track")),
            job=self.job,
            refuse=self._refuse,
        )
        self.subs = router.routes[spec.name]
        self.failed = 0

    def run(self) -> dict[str, int]:
        if not self.sender.track or self.job is None:
            return self._run()
        key = alive_key(self.payload["run"], self.job_id)
        state = self._start(key)
        if state == "gone":
            log.warning("job %s not run: Redis lost its run %s", self.job_id, self.payload["run"])
            return {"messages": 0, "failed": 0}
        if state == "done":
            log.warning("job %s not run again: an earlier attempt made its sends", self.job_id)
            return {"messages": 0, "failed": 0}
        _heartbeats.hold(self.router.redis_connection, key, self._alive_ms)
        try:
            return self._run()
        finally:
            _heartbeats.release(key)

    @property
    def _alive_ms(self) -> int:
        return int(self.router.dead_after * 1000)

    def _start(self, key: str) -> str:
        assert self.job is not None
        keys = run_keys(self.payload["run"])
        attempt = uuid.uuid4().hex
        info = {
            "attempt": attempt,
            "node": self.spec.name,
            "worker": self.job.worker_name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        state = self.router.redis_connection.eval(  # type: ignore[union-attr]
            _START,
            4,
            keys["pending"],
            keys["running"],
            key,
            self.job.key,
            self.job_id,
            JSONSerializer.dumps(info),
            self._alive_ms,
            RUN_TTL,
            DONE_FIELD,
            ATTEMPT_FIELD,
            attempt,
        )
        return state.decode() if isinstance(state, bytes) else str(state)

    def _run(self) -> dict[str, int]:
        limit = self.router.batch_size * _FLUSH_AFTER
        for index, item in enumerate(self.payload["items"]):
            self._one(index, item)
            if self.sender.count >= limit:
                self.sender.send()
        self.sender.send(ended=True)
        return {"messages": len(self.payload["items"]), "failed": self.failed}

    def _one(self, index: int, item: list[Any]) -> None:
        fields, origin, parent, hops, where = item
        spec = self.spec
        message = Message(fields)
        hop = f"{self.job_id}:{index}"
        message._meta = (origin, self.payload["run"], parent, hops)
        message._hop = hop  # type: ignore[assignment]  # a job-wide id, not a counter
        if hops >= self.router.max_hops:
            error = HopLimitError(spec.name, self.router.max_hops, [origin, spec.name])
            self._fail(item, error)
            return
        try:
            result = spec.func(message)
            for out in result if type(result) is GeneratorType else (result,):
                shaped = spec.shape(out)
                if shaped is not None:
                    self._send(shaped, hop, hops + 1, where)
        except JobTimeoutException:
            # The job's time is up: the whole batch fails, and RQ retries it.
            raise
        except Exception as exc:
            log.error("node %r failed on %r", spec.name, message, exc_info=True)
            self._fail(item, exc)

    def _send(self, fields: dict[str, Any], hop: str, hops: int, where: Any) -> None:
        name = self.spec.name
        if not self.subs and self.sender.track:
            self.sender.outputs.append(JSONSerializer.dumps({**fields, "@node": name}).decode())
        for sub in self.subs:
            self.sender.add(sub, [[fields, name, hop, hops, where]])

    def _refuse(self, sent: list[Any], error: MessageTooBigError) -> None:
        # The failure is the input message whose output was too big.
        index = int(sent[2].rsplit(":", 1)[1])
        log.error("node %r: %s", self.spec.name, error)
        self._fail(self.payload["items"][index], error)

    def _fail(self, item: list[Any], exc: BaseException) -> None:
        self.failed += 1
        if self.sender.track:
            text = str(exc) if isinstance(exc, EmitError) else f"raised {type(exc).__name__}: {exc}"
            self.sender.failures.append(_failure(self.spec.name, type(exc).__name__, text, item))


class _Heartbeats:
    """Keeps the alive keys of the batches this process runs from expiring.

    One thread per process beats for every batch in hand: a node may run longer
    than a key lives, and only a dead process (or one whose interpreter is stuck
    for ``dead_after`` seconds) may let one lapse.
    """

    def __init__(self) -> None:
        self._keys: dict[str, tuple[Redis, int]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, connection: Any, key: str, ttl_ms: int) -> None:
        with self._lock:
            self._keys[key] = (connection, ttl_ms)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="emit-heartbeat", daemon=True
                )
                self._thread.start()

    def release(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def forget_all(self) -> None:
        """In a forked child: the parent's batches and thread are not this process's."""
        self._keys = {}
        self._lock = threading.Lock()
        self._thread = None

    def _beat(self) -> None:
        while True:
            with self._lock:
                held = list(self._keys.items())
            for key, (connection, ttl_ms) in held:
                try:
                    # A key already gone stays gone: its job was found dead.
                    connection.pexpire(key, ttl_ms)
                except RedisError as exc:
                    # Redis may be back before the key lapses; the next beat tries again.
                    log.debug("heartbeat for %s failed: %s", key, exc)
            time.sleep(min((ttl for _, (_, ttl) in held), default=1000) / 4000)


_heartbeats = _Heartbeats()
os.register_at_fork(after_in_child=_heartbeats.forget_all)


def _failure(node: str, kind: str, text: str, item: list[Any]) -> str:
    fields, origin, _parent, _hops, where = item
    record = {
        "kind": "failure",
        "node": node,
        "origin": origin,
        "where": where,
        "error": {"type": kind, "text": clip(text)},
        "message": fields,
    }
    return JSONSerializer.dumps(record).decode()


def clip(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _bytes(size: int) -> str:
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"


def run_keys(run: str) -> dict[str, str]:
    """The Redis keys of a run: jobs pending, output lines, failure records, jobs running."""
    return {
        "pending": f"emit:run:{run}:pending",
        "out": f"emit:run:{run}:out",
        "failed": f"emit:run:{run}:failed",
        "running": f"emit:run:{run}:running",
    }


def alive_key(run: str, job_id: str) -> str:
    """The key a running job of ``run`` keeps from expiring while its process lives."""
    return f"emit:run:{run}:alive:{job_id}"


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
