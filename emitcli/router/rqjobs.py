"""The worker's side of RQRouter: what one job runs, and what happens when it fails.

Every job names :func:`run_batch` with a batch of messages for one node.  The
worker runs the node on each and sends on what it returns, through a
:class:`~emitcli.router.rq.Sender`, at the end of the job.  :func:`batch_failed`
(RQ's failure callback) and :func:`horse_killed` (the work horse killed
handler of ``emit worker``) report a job that failed as a whole to its run.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from time import perf_counter
from types import GeneratorType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job, get_current_job
from rq.timeouts import JobTimeoutException

from ..codec import JSONSerializer
from ..errors import EmitError, HopLimitError, MessageTooBigError
from ..inputs import Record
from ..messages import Message, _copy
from ..node import NodeSpec
from ..trace import NO_RESULT, HopEvent, set_error
from .core import Router
from .rq import JOB_FUNCTION, RQRouter, Sender
from .rqbook import (
    ATTEMPT_FIELD,
    DONE_FIELD,
    RUN_TTL,
    START_SCRIPT,
    alive_key,
    failure_record,
    failure_text,
    marks_of,
    report_failure,
    run_keys,
)

log = logging.getLogger(__name__)

# A job of a worker that dies with an endless generator in hand must not hold
# everything it produced in memory: past this many batches it sends early.
_FLUSH_AFTER = 10

_graphs: dict[str, Router] = {}
_preloaded: str | None = None


def preload(router: Router, locator: str) -> None:
    """Make this process run ``router``'s jobs, and refuse jobs of any other graph."""
    global _preloaded
    _keep(router, locator)
    _preloaded = locator


def run_batch(payload: dict[str, Any]) -> dict[str, int]:
    """The RQ job: run one node on a batch of messages and send on what it returns."""
    if not isinstance(payload, dict):
        raise EmitError(
            f"refused: the job's argument is {type(payload).__name__}, not emit's batch"
        )
    router = _graph(payload.get("graph"))
    node = payload.get("node")
    spec = router.nodes.get(node) if isinstance(node, str) else None
    if spec is None:
        raise EmitError(f"refused: job names {node!r}, which is not a node of {payload['graph']!r}")
    _check_batch(payload)
    return Batch(router, spec, payload).run()


def _check_batch(payload: dict[str, Any]) -> None:
    """Refuse a batch that is not what :class:`~emitcli.router.rq.Sender` enqueues."""
    items = payload.get("items")
    well_formed = (
        isinstance(payload.get("run"), str)
        and isinstance(items, list)
        and all(
            isinstance(item, list)
            and len(item) == 5
            and isinstance(item[0], dict)
            and isinstance(item[3], int)
            for item in items
        )
    )
    if not well_formed:
        raise EmitError(
            "refused: the job's batch is not emit's "
            "(a 'run' id and 'items' of [fields, origin, parent, hops, where])"
        )


def batch_failed(job: Job, connection: Redis, kind: type, value: BaseException, tb: Any) -> None:
    """RQ's failure callback: a batch that will not be retried is reported to its run.

    RQ calls it before it decides to retry, for a job that raised, timed out
    or was found abandoned (its worker died); with retries left it only logs.
    """
    settle(job, connection, kind.__name__, failure_text(kind, value))


def horse_killed(job: Job, pid: int, status: int, rusage: Any) -> None:
    """``emit worker``'s work horse killed handler: the job's run hears of it now.

    RQ fails (or retries) the job of a horse that died without calling its
    failure callback; without this, only a run that ``emit run`` follows
    would notice, once the job's heartbeat lapsed.
    """
    if job.func_name != JOB_FUNCTION:
        return
    if os.WIFSIGNALED(status):
        how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        how = f"exit status {os.waitstatus_to_exitcode(status)}"
    text = f"worker died: Work-horse terminated unexpectedly (pid {pid}, {how})"
    settle(job, job.connection, "WorkerDied", text)


def settle(job: Job, connection: Redis, kind: str, text: str) -> None:
    """Log a job that failed as a whole; book its messages as failed unless RQ retries it."""
    payload = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    retrying = bool(job.retries_left and job.retries_left > 0)
    if retrying:
        log.warning(
            "job %s for node %r failed (%s); RQ retries it (retries left: %d, this one included)",
            job.id,
            payload.get("node"),
            text,
            job.retries_left,
        )
    else:
        log.error("job %s for node %r failed: %s", job.id, payload.get("node"), text)
    if not payload.get("track"):
        return
    home = _home(payload, connection)
    if retrying:
        home.hdel(run_keys(payload["run"])["running"], job.id)
        return
    report_failure(job, home, kind, text)


def _home(payload: dict[str, Any], connection: Redis) -> Redis:
    """The Redis of a job's run: its graph's own connection, where the job was sent from."""
    try:
        router = _graph(payload.get("graph"))
    except Exception:
        # The graph is what failed (a job naming another graph); the job's
        # own Redis is the only one known.
        return connection
    return getattr(router, "redis_connection", None) or connection


def _graph(locator: Any) -> Router:
    if not isinstance(locator, str):
        raise EmitError(f"refused: the job names no graph (its 'graph' is {locator!r})")
    router = _graphs.get(locator)
    if router is not None:
        return router
    from ..loader import find_loaded, load_router

    if _preloaded is not None:
        # Another name for the same router (app:router, graph:router) is fine;
        # it is looked up among the modules loaded already, never imported, so
        # a job cannot make this worker run code of its choosing.
        router = find_loaded(locator)
        if router is not _graphs[_preloaded]:
            raise EmitError(
                f"refused: this worker runs the graph {_preloaded!r}, the job names {locator!r}"
            )
        _graphs[locator] = router
        return router
    router = load_router(locator)
    _keep(router, locator)
    return router


def _keep(router: Router, locator: str) -> None:
    """Ready ``router`` for its jobs, which name it ``locator``, once for this process."""
    router.resolve_node_modules()
    if isinstance(router, RQRouter):
        router.locator = locator
    _graphs[locator] = router


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
            trace=bool(payload.get("trace")),
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
        run = self.payload["run"]
        home = self.router.redis_connection
        assert home is not None
        keys = run_keys(run)
        marks, marks_ttl = marks_of(run, self.job_id, self.job.connection, home)
        attempt = uuid.uuid4().hex
        info = {
            "attempt": attempt,
            "node": self.spec.name,
            "worker": self.job.worker_name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        state = home.eval(
            START_SCRIPT,
            4,
            keys["pending"],
            keys["running"],
            key,
            marks,
            self.job_id,
            JSONSerializer.dumps(info),
            self._alive_ms,
            RUN_TTL,
            DONE_FIELD,
            ATTEMPT_FIELD,
            attempt,
            marks_ttl,
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
        hop = f"{self.job_id}:{index}"
        if hops >= self.router.max_hops:
            path = cycle_through(self.router, origin, spec.name)
            error = HopLimitError(spec.name, self.router.max_hops, path)
            self._fail(item, error, hop)
            if self.sender.trace:
                self._trace(self._event(hop, item, fields), perf_counter(), 0, error)
            return
        message = Message(fields)
        message._meta = (origin, self.payload["run"], parent, hops)
        message._hop = hop  # type: ignore[assignment]  # a job-wide id, not a counter
        event = self._event(hop, item, _copy(fields)) if self.sender.trace else None
        began = perf_counter()
        sent = 0
        try:
            result = spec.func(message)
            for out in result if type(result) is GeneratorType else (result,):
                shaped = spec.shape(out)
                if shaped is not None:
                    self._send(shaped, hop, hops + 1, where)
                    sent += 1
        except JobTimeoutException:
            # The job's time is up: the whole batch fails, and RQ retries it.
            raise
        except Exception as exc:
            if event is not None:  # first, so that its time is the node's alone
                self._trace(event, began, sent, exc)
            log.error("node %r failed on %r", spec.name, message, exc_info=True)
            self._fail(item, exc, hop)
            return
        if event is not None:
            self._trace(event, began, sent)

    def _event(self, hop: str, item: list[Any], fields: dict[str, Any]) -> HopEvent:
        _, origin, parent, hops, where = item
        source, line = Record.place(where) if where else (None, None)
        run = self.payload["run"]
        return HopEvent(
            run, hop, parent, origin, self.spec.name, hops, fields, time.time(),
            source=source, line=line,
        )  # fmt: skip

    def _trace(
        self, event: HopEvent, began: float, sent: int, error: BaseException | None = None
    ) -> None:
        """Finish a hop's event, its node's code begun at ``began``, and keep it to send."""
        event.duration = perf_counter() - began
        event.sent = sent
        if error is not None:
            set_error(event, error)
        elif not sent:
            event.outcome = NO_RESULT
        self.sender.events.append(JSONSerializer.dumps(event.as_record()).decode())

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

    def _fail(self, item: list[Any], exc: BaseException, hop: str | None = None) -> None:
        self.failed += 1
        if self.sender.track:
            text = str(exc) if isinstance(exc, EmitError) else f"raised {type(exc).__name__}: {exc}"
            # With the hop named, the run knows the hop's event tells of this.
            traced = hop if self.sender.trace else None
            self.sender.failures.append(
                failure_record(self.spec.name, type(exc).__name__, text, item, traced)
            )


def cycle_through(router: Router, origin: str, node: str) -> list[str]:
    """The shortest route from ``node`` round to it again through ``origin``.

    A message carries its hop count, not the path it came by: when one is
    dropped at the hop limit, this is the cycle of the graph it went round,
    as the local backend shows it.  ``[origin, node]`` if there is none.
    """
    paths = {node: [node]}
    todo = deque([node])
    while todo:
        name = todo.popleft()
        if name == origin:
            return [*paths[name], node]
        for sub in router.routes.get(name, ()):
            if sub.name not in paths:
                paths[sub.name] = [*paths[name], sub.name]
                todo.append(sub.name)
    return [origin, node]


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
