"""Reading recorded messages back for ``emit replay``.

Two kinds of file hold messages: a record (``emit run --record``: a
``"kind": "hop"`` line for every hop) and a dead-letter file
(``--dead-letter``: a ``"kind": "dead-letter"`` line for every failure).
:func:`replay_records` turns either into the :class:`~emitcli.inputs.Record`
objects ``emit run`` consumes, so a replay prints the same output and summary
as a run.  A line that cannot be sent again becomes a record without fields
that carries the reason, and is reported with its line number as bad input
is.

Three selections:

- the default, the original input: each input record once, to the entry
  points (or to the node it was first sent to, for a replay of a replay);
- ``failed``: each message whose hop failed, to the node where it failed;
- ``nodes``: each message that reached one of these nodes, to that node.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .inputs import Record
from .messages import ENTRY_POINT
from .router.core import Router

KINDS = ("hop", "dead-letter", "bad-input", "run")
_UNUSABLE = "cannot replay: "


@dataclass(frozen=True)
class Selection:
    """Which recorded messages go out again."""

    failed: bool = False
    #: Names of the nodes chosen with ``--node``; empty means no such choice.
    nodes: frozenset[str] = frozenset()


class _Reader:
    def __init__(self, router: Router, path: str, selection: Selection) -> None:
        self.router = router
        self.path = path
        self.selection = selection
        self.entries = {spec.name for spec in router.routes.get(ENTRY_POINT, ())}
        self.seen: set[tuple[Any, ...]] = set()

    def records(self, lines: Iterable[bytes]) -> Iterator[Record]:
        for number, raw in enumerate(lines, 1):
            text = raw.rstrip(b"\r\n")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (UnicodeDecodeError, ValueError) as exc:
                yield self._unusable(number, f"not a JSON line ({exc})", text)
                continue
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind not in KINDS:
                reason = f"not a record or dead-letter line (kind {kind!r})"
                yield self._unusable(number, reason, text)
                continue
            try:
                record = self._select(kind, obj, number)
            except (KeyError, TypeError, ValueError) as exc:
                yield self._unusable(number, f"a {kind} line without a usable {exc}", text)
                continue
            if record is not None:
                yield record

    def _select(self, kind: str, obj: dict[str, Any], number: int) -> Record | None:
        if kind == "run":
            return None
        if kind == "hop":
            return self._hop(obj, number)
        return self._failure(kind, obj, number)

    def _hop(self, obj: dict[str, Any], number: int) -> Record | None:
        node, fields = _text(obj, "node"), _fields(obj, "fields")
        selection = self.selection
        if selection.nodes:
            return self._to(node, fields, number) if node in selection.nodes else None
        if selection.failed:
            return self._to(node, fields, number) if obj.get("outcome") == "error" else None
        if obj.get("origin") != ENTRY_POINT:
            return None
        if not self._first(obj, number):
            return None
        # An input first sent to a node that is not an entry point came from
        # a replay with --node or --failed; it goes back to that node.
        return self._to(None if node in self.entries else node, fields, number)

    def _failure(self, kind: str, obj: dict[str, Any], number: int) -> Record | None:
        node = obj.get("node")
        selection = self.selection
        if selection.nodes and node not in selection.nodes:
            return None
        if (selection.nodes or selection.failed) and node is not None:
            return self._to(node, _fields(obj, "message"), number)
        if not self._first(obj, number):
            return None
        if obj.get("input") is None:
            error = obj.get("error") or {}
            text = error.get("text") if isinstance(error, dict) else None
            where = Record(str(obj.get("source", "?")), obj.get("line", 0), None).where
            reason = f"input {where} was never read ({text}); nothing to send"
            if isinstance(text, str) and text.startswith(_UNUSABLE):
                reason = text.removeprefix(_UNUSABLE)  # a dead letter of a replay: as it was
            return self._unusable(number, reason, _raw(obj))
        return self._to(obj.get("input_node"), _fields(obj, "input"), number)

    def _first(self, obj: dict[str, Any], number: int) -> bool:
        """Whether this is the first line seen for its input record."""
        if obj.get("line") is None:
            return True
        key = (obj.get("run"), obj.get("source"), obj.get("line"))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def _to(self, node: str | None, fields: dict[str, Any], number: int) -> Record:
        if node is not None and node not in self.router.nodes:
            return self._unusable(number, f"node {node!r} is not in this graph")
        return Record(self.path, number, fields, node=node)

    def _unusable(self, number: int, reason: str, raw: bytes = b"") -> Record:
        return Record(self.path, number, None, _UNUSABLE + reason, raw)


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(repr(key))
    return value


def _fields(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ValueError(repr(key))
    return value


def _raw(obj: dict[str, Any]) -> bytes:
    """The bytes of an input line that could not be read, as a dead letter keeps them."""
    encoded = obj.get("raw_base64")
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            pass
    raw = obj.get("raw")
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else b""


def replay_records(
    router: Router, path: str, lines: Iterable[bytes], selection: Selection
) -> Iterator[Record]:
    """The records to send again from the lines of a record or dead-letter file."""
    return _Reader(router, path, selection).records(lines)


def requeue_failed(router: Router, connection: Any) -> dict[str, int]:
    """Requeue the graph's failed RQ jobs; return how many, per queue.

    Each job goes back untracked: the run that enqueued it has ended, and
    what the job sends now is not counted by any ``emit run``.
    """
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from .router.rq import JOB_FUNCTION
    from .worker import graph_queues

    serializer = getattr(router, "serializer", None)
    counts: dict[str, int] = {}
    for name in graph_queues(router):
        registry = FailedJobRegistry(name, connection=connection, serializer=serializer)
        counts[name] = 0
        for job in Job.fetch_many(registry.get_job_ids(), connection, serializer):
            if job is None or job.func_name != JOB_FUNCTION:
                continue
            payload = dict(job.args[0])
            if payload.get("node") not in router.nodes:
                continue
            payload["track"] = False
            job.args = (payload,)
            job.save()
            registry.requeue(job)
            counts[name] += 1
    return counts
