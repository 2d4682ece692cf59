"""``emit run --backend rq``: enqueue the input, then follow the run to its end.

The run's jobs keep Redis keys up to date in the same transaction as their
sends (:func:`emitcli.router.rqbook.run_keys`): how many jobs are pending, the
output lines of sinks, failure records, and the jobs running now.  The run is
over when every input record was enqueued and no job is pending.

Following is also where faults are noticed, since this side waits anyway: a
running job whose alive key lapsed lost its worker, and is settled as RQ
settles an abandoned job (retried or failed, the failure reported here), only
sooner; a lost connection is retried with backoff for a while; and a Redis
that comes back without the run's keys is reported as a lost run, not waited on.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from .errors import EmitError, MessageTooBigError
from .inputs import Record
from .messages import ENTRY_POINT
from .router.rq import RECONNECT_FOR, RQRouter, Sender
from .router.rqbook import ATTEMPT_FIELD, alive_key, marks_of, report_failure, run_keys, same_redis
from .runner import Failure, Stats
from .trace import ERROR, HopEvent

log = logging.getLogger(__name__)

#: Most output lines or failures taken from Redis in one call.
_CHUNK = 1000
#: Seconds between looks for jobs whose worker died.
REAP_EVERY = 1.0
_ENDED = {JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value}

# Drop a running entry only if it is still the one looked at: a new attempt of
# the job may have replaced it since.  KEYS: running; ARGV: job id, entry.
_FORGET = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('hdel', KEYS[1], ARGV[1])
"""

# As _FORGET, and the job counts as ended with a failure record.
# KEYS: running, pending, failed; ARGV: job id, entry, failure record.
_LOST = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('hdel', KEYS[1], ARGV[1])
if redis.call('exists', KEYS[2]) == 0 then return 0 end
redis.call('decr', KEYS[2])
redis.call('rpush', KEYS[3], ARGV[3])
return 1
"""


class RunLostError(EmitError, RedisError):
    """Redis no longer holds a run's bookkeeping: it was restarted without
    persistence, flushed, or evicted the keys.  The jobs still pending then,
    and the messages they carried, are lost."""

    def __init__(self, run: str, pending: int) -> None:
        self.run = run
        self.pending = pending
        super().__init__(
            f"Redis no longer knows run {run} (restarted without persistence, flushed, or "
            f"out of memory): its {pending} pending job(s) and their messages are lost; "
            "the output printed so far is all there is"
        )


class RQRun:
    """One run of a graph on RQ workers, seen from the command line.

    :param out: binary stream for output lines.
    :param report: called with ``(where, node, text, record)`` for each failure;
        ``record`` is the failure record of a message, or the dead-letter
        record of an input line that could not be read.
    :param on_event: called with the :class:`~emitcli.trace.HopEvent` of
        every hop; given, the run is traced: its jobs publish their events to
        the run's stream, read here as the run goes.  A message of a batch
        that failed as a whole (its worker died, its time ran out) has no
        event from a worker: its failure record stands in for one.
    """

    def __init__(
        self,
        router: RQRouter,
        *,
        out: IO[bytes],
        report: Callable[[str, str | None, str, dict[str, Any]], None],
        run_id: str | None = None,
        on_event: Callable[[HopEvent], None] | None = None,
    ) -> None:
        if router.redis_connection is None:
            raise EmitError("the router has no Redis connection; pass -u URL")
        self.router = router
        self.connection: Any = router.redis_connection
        self.out = out
        self.report = report
        self.run_id = run_id or uuid.uuid4().hex
        self.keys = run_keys(self.run_id)
        self.stats = Stats()
        self.entries = [router.nodes[name] for name in router.subscribers(ENTRY_POINT)]
        if not self.entries:
            raise EmitError("the graph has no entry point; mark a node with entry_point=True")
        self.on_event = on_event
        #: The id of the last entry read from the run's stream of events.
        self.events_read = "0-0"
        self.unhopped = 0
        self.closed = False
        self.enqueued = 0
        self.last_pending = 0
        self.reaped_at = 0.0

    def submit(self, records: Iterable[Record], *, follow: bool = True) -> None:
        """Enqueue every good record for the entry points (or the node it names,
        as ``emit replay`` does); report the bad ones."""
        sender = Sender(
            self.router,
            self.run_id,
            track=True,
            refuse=self._refused,
            trace=self.on_event is not None,
        )
        size = self.router.batch_size
        nodes = self.router.nodes
        for record in records:
            self.stats.records += 1
            if record.fields is None:
                self.stats.bad_input += 1
                reason = record.error or "bad input"
                letter = Failure(record, None, None, reason).as_record(self.run_id)
                self.report(record.where, None, reason, letter)
                continue
            item = [record.fields, ENTRY_POINT, None, 0, record.where]
            for spec in self.entries if record.node is None else [nodes[record.node]]:
                sender.add(spec, [item])
            if sender.count >= size:
                self.enqueued += len(sender.send())
                if follow:
                    self.drain()
        if sender.count:
            self.enqueued += len(sender.send())

    def _refused(self, item: list[Any], error: MessageTooBigError) -> None:
        self.stats.errors += 1
        self.report(item[4] or "?", error.node, str(error), {})

    # Following -------------------------------------------------------------

    def follow(self, timeout: float | None) -> bool:
        """Print what the run sends until no job is pending; False on timeout.

        :raises RunLostError: Redis came back without the run.
        :raises RedisError: Redis stayed away for ``RECONNECT_FOR`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self._over():
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wait(left)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._reconnect(exc, deadline)

    def _over(self) -> bool:
        self.drain()
        if self.closed:
            return True
        if time.monotonic() - self.reaped_at >= REAP_EVERY:
            self.reap()
        value = self.connection.get(self.keys["pending"])
        if value is None and self.enqueued:
            raise RunLostError(self.run_id, self.last_pending)
        self.last_pending = int(value or 0)
        over = self.last_pending <= 0 and not self._waiting()
        if over and self.on_event is not None:
            # Events go out with their job's sends: the last are in by now.
            self._read_events()
        return over

    def _wait(self, left: float | None) -> None:
        # Block until something arrives, or a second passes, to recheck.
        wait = 1.0 if left is None else max(0.01, min(1.0, left))
        if self.on_event is not None:
            # A traced job's sends come with its events: wait on those.
            self._read_events(block_ms=int(wait * 1000))
            return
        found = self.connection.blpop([self.keys["out"], self.keys["failed"]], timeout=wait)
        if found is not None:
            key, value = found
            self._take(key.decode(), [value])

    def _read_events(self, block_ms: int | None = None) -> None:
        """Pass on the events in the run's stream since the last read; with
        ``block_ms``, wait that long for one entry first."""
        assert self.on_event is not None
        key = self.keys["events"]
        while True:
            found = self.connection.xread({key: self.events_read}, count=_CHUNK, block=block_ms)
            if not found:
                return
            for entry, data in found[0][1]:
                self.events_read = entry
                for event in json.loads(data[b"events"]):
                    self.on_event(HopEvent.from_record(event))
            if block_ms is not None:
                return

    def _reconnect(self, error: RedisError, deadline: float | None) -> None:
        """Wait, with backoff, until Redis answers again; raise ``error`` if it does not."""
        started = time.monotonic()
        give_up = started + RECONNECT_FOR
        if deadline is not None:
            give_up = min(give_up, deadline)
        log.warning("lost Redis (%s); retrying for up to %.0fs", error, give_up - started)
        pause = 0.1
        while time.monotonic() < give_up:
            time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            pause = min(pause * 2, 2.0)
            try:
                self.connection.ping()
            except (RedisConnectionError, RedisTimeoutError):
                continue
            log.warning("Redis is back after %.1fs", time.monotonic() - started)
            return
        raise error

    def pending(self) -> int:
        return int(self.connection.get(self.keys["pending"]) or 0)

    def drain(self) -> None:
        """Take whatever output, failures and events are waiting, without blocking."""
        connection = self.connection
        for key in (self.keys["out"], self.keys["failed"]):
            while not self.closed:
                values = connection.lpop(key, _CHUNK)
                if not values:
                    break
                self._take(key, values)
        if self.on_event is not None and not self.closed:
            self._read_events()

    def _waiting(self) -> bool:
        connection = self.connection
        return bool(connection.llen(self.keys["out"]) or connection.llen(self.keys["failed"]))

    def _take(self, key: str, values: list[bytes]) -> None:
        if key == self.keys["out"]:
            try:
                self.out.write(b"\n".join(values) + b"\n")
                self.out.flush()
            except BrokenPipeError:
                self.closed = True
                return
            self.stats.outputs += len(values)
            return
        for value in values:
            record = json.loads(value)
            self.stats.errors += 1
            where = record.get("where") or "?"
            self.report(where, record.get("node"), record["error"]["text"], record)
            if self.on_event is not None and "hop" not in record:
                self.on_event(self._failure_event(record))

    def _failure_event(self, record: dict[str, Any]) -> HopEvent:
        """The event of a message whose whole batch failed: no worker told of its hop."""
        self.unhopped += 1
        source, line = Record.place(record["where"]) if record.get("where") else (None, None)
        error = record["error"]
        return HopEvent(
            self.run_id, f"failed:{self.unhopped}", record.get("parent"),
            record.get("origin") or "?", record.get("node") or "?", record.get("hops", 0),
            record.get("message") or {}, time.time(), outcome=ERROR,
            error_type=error["type"], error_text=error["text"], source=source, line=line,
        )  # fmt: skip

    # Jobs whose worker died ------------------------------------------------

    def reap(self) -> None:
        """Settle the run's running jobs whose alive key lapsed: their process is gone."""
        self.reaped_at = time.monotonic()
        running = self.connection.hgetall(self.keys["running"])
        if not running:
            return
        ids = [job_id.decode() for job_id in running]
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(alive_key(self.run_id, job_id))
            alive = pipe.execute()
        for job_id, is_alive in zip(ids, alive, strict=True):
            if not is_alive:
                self._settle(job_id, running[job_id.encode()])

    def _settle(self, job_id: str, entry: bytes) -> None:
        info = json.loads(entry)
        job_redis = self._job_redis(info.get("node"))
        marks, _ = marks_of(self.run_id, job_id, job_redis, self.connection)
        status = job_redis.hget(Job.key_for(job_id), "status")
        attempt = self.connection.hget(marks, ATTEMPT_FIELD)
        if status is None:
            return self._vanished(job_id, entry, info)
        if (attempt or b"").decode() != info["attempt"]:
            # RQ retried the job and it started again: that attempt has its own entry.
            return self._forget(job_id, entry)
        status = status.decode()
        try:
            job = Job.fetch(job_id, connection=job_redis, serializer=self.router.serializer)
        except NoSuchJobError:
            return None  # deleted since: the next look finds it vanished
        if status == JobStatus.STARTED.value:
            return self._abandon(job, info)
        if status in _ENDED:
            # A forking worker whose work horse was killed fails the job
            # without calling its failure callback: report it here.
            result = job.latest_result()
            why = (result.exc_string if result else None) or status
            text = f"worker died: {why.strip().splitlines()[-1]}"
            report_failure(job, self.connection, "WorkerDied", text)
            return None
        # Queued or scheduled again (a horse killed with retries left), or finished.
        return self._forget(job_id, entry)

    def _abandon(self, job: Job, info: dict[str, Any]) -> None:
        """Hand RQ a dead worker's job as an abandoned one, now rather than when
        RQ's heartbeat for it expires (a minute or more, plus a worker's
        maintenance interval): RQ calls its failure callback, then retries it
        or moves it to the failed jobs, just as it would later."""
        queue = Queue(job.origin, connection=job.connection, serializer=self.router.serializer)
        registry = StartedJobRegistry(queue=queue)
        entries = {
            f"{job_id}:{execution}": 0
            for job_id, execution in registry.get_job_and_execution_ids(cleanup=False)
            if job_id == job.id
        }
        if not entries:
            # RQ has no record of it running: nothing of RQ's to hand over.
            report_failure(job, self.connection, "WorkerDied", "worker died")
            return
        # Worker maintenance takes this lock too; while it holds it, try again later.
        if not queue.acquire_maintenance_lock():
            return
        log.warning(
            "job %s of node %r has no heartbeat: its worker %s (pid %s on %s) died",
            job.id,
            info.get("node"),
            info.get("worker"),
            info.get("pid"),
            info.get("host"),
        )
        try:
            job.connection.zadd(registry.key, entries, xx=True)
            registry.cleanup(timestamp=0)
        finally:
            queue.release_maintenance_lock()

    def _job_redis(self, node: str | None) -> Any:
        """The Redis the jobs of ``node`` live in: its own connection, or the run's."""
        spec = self.router.nodes.get(node or "")
        return self.router.connection_for(spec) if spec is not None else self.connection

    def _forget(self, job_id: str, entry: bytes) -> None:
        self.connection.eval(_FORGET, 1, self.keys["running"], job_id, entry)

    def _vanished(self, job_id: str, entry: bytes, info: dict[str, Any]) -> None:
        """A running job whose hash is gone (deleted, or lost by Redis): count it
        as ended, once, so that the run does not wait for it forever."""
        record = {
            "kind": "failure",
            "node": info.get("node"),
            "where": None,
            "error": {"type": "JobLost", "text": f"job {job_id} vanished from Redis"},
            "message": {},
        }
        keys = self.keys
        args = (keys["running"], keys["pending"], keys["failed"], job_id, entry)
        self.connection.eval(_LOST, 3, *args, json.dumps(record))

    def missing(self) -> str:
        """What the run still waits for: jobs running, queued and scheduled."""
        pending = self.pending()
        parts = []
        running = self.connection.hgetall(self.keys["running"])
        for entry in running.values():
            info = json.loads(entry)
            parts.append(
                f"node {info.get('node')!r} running on worker {info.get('worker')} "
                f"(pid {info.get('pid')} on {info.get('host')})"
            )
        for name, connection, elsewhere in self._queues():
            queue = Queue(name, connection=connection, serializer=self.router.serializer)
            scheduled = ScheduledJobRegistry(queue=queue).count
            if queue.count:
                parts.append(f"{queue.count} job(s) waiting in queue {name!r}{elsewhere}")
            if scheduled:
                parts.append(
                    f"{scheduled} job(s) in queue {name!r}{elsewhere} scheduled for a retry"
                )
        where = "; ".join(parts) or "none running or queued"
        return f"{pending} job(s) still pending: {where}"

    def _queues(self) -> Iterator[tuple[str, Any, str]]:
        """Each queue of the graph once per Redis: its name, its connection, and
        where it is when not in the run's Redis."""
        seen = set()
        for spec in self.router.nodes.values():
            name = spec.options.get("queue", "default")
            connection = self.router.connection_for(spec) or self.connection
            home = same_redis(connection, self.connection)
            if (name, home or id(connection)) not in seen:
                seen.add((name, home or id(connection)))
                yield name, connection, "" if home else f" of node {spec.name!r}'s own Redis"
