"""``emit run --backend rq``: enqueue the input, then follow the run to its end.

The run's jobs keep three Redis keys up to date in the same transaction as
their sends (:func:`emitcli.router.rq.run_keys`): how many jobs are pending,
the output lines of sinks, and failure records.  The run is over when every
input record was enqueued and no job is pending; this side only reads.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import IO, Any

from .errors import EmitError
from .inputs import Record
from .messages import ENTRY_POINT
from .router.rq import RQRouter, Sender, run_keys
from .runner import Stats

#: Most output lines or failures taken from Redis in one call.
_CHUNK = 1000


class RQRun:
    """One run of a graph on RQ workers, seen from the command line.

    :param out: binary stream for output lines.
    :param report: called with ``(where, node, text, record)`` for each failure.
    """

    def __init__(
        self,
        router: RQRouter,
        *,
        out: IO[bytes],
        report: Callable[[str, str | None, str, dict[str, Any]], None],
        run_id: str | None = None,
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
        self.closed = False

    def submit(self, records: Iterable[Record], *, follow: bool = True) -> None:
        """Enqueue every good record for the entry points; report the bad ones."""
        sender = Sender(self.router, self.run_id, track=True)
        size = self.router.batch_size
        for record in records:
            self.stats.records += 1
            if record.fields is None:
                self.stats.bad_input += 1
                self.report(record.where, None, record.error or "bad input", {})
                continue
            for spec in self.entries:
                sender.add(spec, [[record.fields, ENTRY_POINT, None, 0, record.where]])
            if sender.count >= size:
                sender.send()
                if follow:
                    self.drain()
        if sender.count:
            sender.send()

    def follow(self, timeout: float | None) -> bool:
        """Print what the run sends until no job is pending; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        connection = self.connection
        while True:
            self.drain()
            if self.closed:
                return True
            if int(connection.get(self.keys["pending"]) or 0) <= 0 and not self._waiting():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Block until something arrives (or a second passes, to recheck).
            wait = 1.0 if left is None else max(0.01, min(1.0, left))
            found = connection.blpop([self.keys["out"], self.keys["failed"]], timeout=wait)
            if found is not None:
                key, value = found
                self._take(key.decode(), [value])

    def pending(self) -> int:
        return int(self.connection.get(self.keys["pending"]) or 0)

    def drain(self) -> None:
        """Take whatever output and failures are waiting, without blocking."""
        connection = self.connection
        for key in (self.keys["out"], self.keys["failed"]):
            while not self.closed:
                values = connection.lpop(key, _CHUNK)
                if not values:
                    break
                self._take(key, values)

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
