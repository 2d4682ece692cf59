"""Trace events: one for every hop, for ``--trace``, ``--record`` and tests.

A hop is one message delivered to one node.  Its event says where the message
came from and went, what it held, when the node started, how long the node's
own code ran, and how it ended: ``ok`` (it sent something), ``no result``, or
``error`` with the exception's type and text.

Tracing costs nothing when no one listens because the plain
:class:`~emitcli.local.LocalEngine` never looks for a listener: a run that
wants events gets a :class:`TracingEngine`, which times each node by wrapping
its function and leaves the dispatch loop itself as it is.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from types import GeneratorType
from typing import IO, TYPE_CHECKING, Any

from .errors import HopLimitError, ResultError
from .local import ErrorHandler, LocalEngine, OutputHandler, reraise
from .messages import Message, _copy

if TYPE_CHECKING:
    from .node import NodeSpec
    from .router.core import Router

OK = "ok"
NO_RESULT = "no result"
ERROR = "error"


@dataclass(slots=True)
class HopEvent:
    """What happened when one node took one message.

    ``hop`` and ``parent`` are ids unique within the run (integers in this
    process, job-based strings on RQ); ``parent`` is the hop whose node sent
    the message, ``None`` for input.  ``start`` is wall-clock seconds since
    the epoch, ``duration`` the seconds the node's own code ran (for a
    generator, the sum of the time spent producing its items).
    """

    run: str
    hop: Any
    parent: Any
    origin: str
    node: str
    hops: int
    fields: dict[str, Any]
    start: float
    duration: float = 0.0
    outcome: str = OK
    sent: int = 0
    error_type: str | None = None
    error_text: str | None = None
    #: The input record the hop belongs to: its source and line number.
    source: str | None = None
    line: int | None = None

    def as_record(self) -> dict[str, Any]:
        """The event as one JSON object, the form ``--record`` writes."""
        out: dict[str, Any] = {
            "kind": "hop",
            "run": self.run,
            "hop": self.hop,
            "parent": self.parent,
            "origin": self.origin,
            "node": self.node,
            "hops": self.hops,
            "fields": self.fields,
            "start": round(self.start, 6),
            "duration": round(self.duration, 9),
            "outcome": self.outcome,
            "sent": self.sent,
        }
        if self.error_type is not None:
            out["error"] = {"type": self.error_type, "text": self.error_text}
        if self.line is not None:
            out["source"] = self.source
            out["line"] = self.line
        return out

    @classmethod
    def from_record(cls, obj: dict[str, Any]) -> HopEvent:
        """The event a :meth:`as_record` object describes (from an RQ worker)."""
        error = obj.get("error") or {}
        return cls(
            obj["run"], obj["hop"], obj["parent"], obj["origin"], obj["node"], obj["hops"],
            obj["fields"], obj["start"], obj["duration"], obj["outcome"], obj.get("sent", 0),
            error.get("type"), error.get("text"), obj.get("source"), obj.get("line"),
        )  # fmt: skip


#: ``on_event(event)``: called once for every hop, when the hop has ended.
EventHandler = Callable[[HopEvent], None]


class TracingEngine(LocalEngine):
    """A :class:`~emitcli.local.LocalEngine` that reports every hop to ``on_event``.

    Each node runs through a timing wrapper on a private copy of its spec, so
    the router and the engines of other runs never see the wrapper.  Results
    are shaped inside the wrapper (to tell ``ok`` from ``no result`` and to
    catch a bad result as the hop's error), so the copy's own ``shape``
    passes them through.
    """

    def __init__(
        self,
        router: Router,
        *,
        on_event: EventHandler,
        on_output: OutputHandler | None = None,
        outputs: set[str] | frozenset[str] | None = None,
        on_error: ErrorHandler = reraise,
        run_id: str | None = None,
    ) -> None:
        super().__init__(
            router, on_output=on_output, outputs=outputs, on_error=self._failed, run_id=run_id
        )
        self.on_event = on_event
        self._on_error = on_error
        traced = {spec.name: self._traced(spec) for spec in router.nodes.values()}
        self._specs = traced
        self.routes = {
            origin: tuple(traced[spec.name] for spec in subs)
            for origin, subs in router.routes.items()
        }
        self._plans = {name: (self.routes[name], emit) for name, (_, emit) in self._plans.items()}

    def call(self, spec: NodeSpec, message: Message, *, route: bool = True) -> tuple[Message, ...]:
        return super().call(self._specs[spec.name], message, route=route)

    def deliver(self, spec: NodeSpec, message: Message) -> None:
        super().deliver(self._specs[spec.name], message)

    def _failed(self, node: str, message: Message, exc: BaseException) -> None:
        # The hop limit is the one failure that happens without running the
        # node, so it is the one the wrappers never see.
        if isinstance(exc, HopLimitError):
            event = self._event(node, message)
            set_error(event, exc)
            self.on_event(event)
        self._on_error(node, message, exc)

    def _event(self, node: str, message: Message) -> HopEvent:
        origin, _, parent, hops = message._meta
        return HopEvent(
            self.run_id, message._hop, parent, origin, node, hops,
            _copy(message.__dict__), _EPOCH + perf_counter(),
        )  # fmt: skip

    def _traced(self, spec: NodeSpec) -> NodeSpec:
        func, shape, name, emit = spec.func, spec.shape, spec.name, self._emit

        def timed(message: Message) -> Any:
            event = self._event(name, message)
            began = perf_counter()
            try:
                result = func(message)
            except Exception as exc:
                event.duration = perf_counter() - began
                emit(set_error(event, exc))
                raise
            if type(result) is GeneratorType:
                event.duration = perf_counter() - began
                return self._timed_items(event, message, result, shape)
            try:
                fields = shape(result)
            except ResultError as exc:
                event.duration = perf_counter() - began
                emit(set_error(event, exc))
                raise
            event.duration = perf_counter() - began
            if fields is None:
                event.outcome = NO_RESULT
            else:
                event.sent = 1
            emit(event)
            return fields

        traced = copy.copy(spec)
        traced.func = timed
        traced.shape = _shaped
        return traced

    def _timed_items(
        self, event: HopEvent, message: Message, items: Iterator[Any], shape: Any
    ) -> Iterator[Any]:
        """The node's generator, timed item by item; its event is sent when it ends.

        A bad item is reported as the engine reports one (the hop's error, and
        the generator goes on); the items passed on are shaped already.
        """
        while True:
            began = perf_counter()
            try:
                item = next(items)
            except StopIteration:
                event.duration += perf_counter() - began
                break
            except Exception as exc:
                event.duration += perf_counter() - began
                self._emit(set_error(event, exc))
                raise
            event.duration += perf_counter() - began
            try:
                fields = shape(item)
            except ResultError as exc:
                set_error(event, exc)
                self._on_error(event.node, message, exc)
                continue
            if fields is not None:
                event.sent += 1
                yield fields
        if event.outcome == OK and not event.sent:
            event.outcome = NO_RESULT
        self._emit(event)

    def _emit(self, event: HopEvent) -> None:
        self.on_event(event)


#: Wall-clock time at perf_counter's zero: a hop's start costs one clock read.
_EPOCH = time.time() - perf_counter()


def _shaped(fields: Any) -> Any:
    """The traced copy's ``shape``: its function returns shaped fields already."""
    return fields


def set_error(event: HopEvent, exc: BaseException) -> HopEvent:
    """Mark ``event`` failed with ``exc``."""
    event.outcome = ERROR
    event.error_type = type(exc).__name__
    event.error_text = str(exc)
    return event


# Records ---------------------------------------------------------------------


def encode_line(value: dict[str, Any]) -> bytes:
    """One JSON line; a lone surrogate (no UTF-8 form) is kept as its escape."""
    try:
        return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(value, separators=(",", ":")) + "\n").encode()


class RecordWriter:
    """Writes a run's events as JSON lines: the file ``--record`` names.

    The first line describes the run (``"kind": "run"``); every hop follows as
    a ``"kind": "hop"`` line, and input lines that could not be read as
    ``"kind": "bad-input"``.  Lines are flushed as they are written, so the
    file is whole up to the last hop even when the run is killed.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def start(self, run: str, graph: str, backend: str) -> None:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write(
            {"kind": "run", "run": run, "graph": graph, "backend": backend, "started": started}
        )

    def hop(self, event: HopEvent) -> None:
        self._write(event.as_record())

    def write(self, record: dict[str, Any]) -> None:
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        self.stream.write(encode_line(record))
        self.stream.flush()


# Summaries -------------------------------------------------------------------


@dataclass
class NodeTally:
    """Counts and durations of one node's hops, for the live table and ``inspect``.

    With ``sample`` set, at most that many durations are kept, a uniform
    sample of all of them (reservoir sampling), so a long stream keeps
    memory flat; the count, mean and maximum stay exact.
    """

    node: str
    sample: int | None = None
    hops: int = 0
    sent: int = 0
    errors: int = 0
    total: float = 0.0
    longest: float = 0.0
    durations: list[float] = field(default_factory=list)

    def add(self, outcome: str, sent: int, duration: float) -> None:
        self.hops += 1
        self.sent += sent
        if outcome == ERROR:
            self.errors += 1
        self.total += duration
        if duration > self.longest:
            self.longest = duration
        if self.sample is None or len(self.durations) < self.sample:
            self.durations.append(duration)
        else:
            slot = int(random.random() * self.hops)
            if slot < self.sample:
                self.durations[slot] = duration

    @property
    def mean(self) -> float:
        return self.total / self.hops if self.hops else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the durations (nearest rank), 0 with none."""
        ordered = sorted(self.durations)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


class Tally:
    """Per-node tallies of a stream of events, in the order nodes first appear."""

    def __init__(self, sample: int | None = None) -> None:
        self.nodes: dict[str, NodeTally] = {}
        self.sample = sample
        self.started = time.monotonic()

    def add(self, node: str, outcome: str, sent: int, duration: float) -> None:
        tally = self.nodes.get(node)
        if tally is None:
            tally = self.nodes[node] = NodeTally(node, self.sample)
        tally.add(outcome, sent, duration)

    def event(self, event: HopEvent) -> None:
        self.add(event.node, event.outcome, event.sent, event.duration)

    def __iter__(self) -> Iterator[NodeTally]:
        # A copy: the live display reads from its own thread while hops are added.
        return iter(list(self.nodes.values()))


def hop_tree(events: Iterable[HopEvent]) -> list[tuple[HopEvent, list[Any]]]:
    """The hops of one input record as a forest: ``(event, children)`` pairs.

    Children are in hop order, which is the order the messages were sent, in
    this process; on RQ, where hop ids name jobs, in the order the hops began.
    """
    ordered = sorted(events, key=lambda e: (e.hop, 0.0) if type(e.hop) is int else (0, e.start))
    nodes: dict[Any, tuple[HopEvent, list[Any]]] = {}
    for event in ordered:
        nodes.setdefault(event.hop, (event, []))
    roots: list[tuple[HopEvent, list[Any]]] = []
    for event in ordered:
        entry = nodes[event.hop]
        if entry[0] is not event:
            continue
        parent = nodes.get(event.parent) if event.parent is not None else None
        (parent[1] if parent is not None else roots).append(entry)
    return roots


# emit inspect FILE.jsonl -----------------------------------------------------

#: How many of the slowest hops a summary lists.
SLOWEST = 5


#: The kinds of line a record or a dead-letter file holds.
RECORD_KINDS = ("run", "hop", "bad-input", "dead-letter")


def summarise(path: str, lines: Iterable[bytes]) -> dict[str, Any]:
    """A record (or dead-letter) file in numbers: per node counts, errors and
    durations, the slowest hops.

    Lines are counted by kind; a failed hop, a dead letter and bad input each
    count as an error of their node (``None`` for input that could not be
    read).  Lines that are none of these kinds are counted as unreadable.
    """
    tally = Tally()
    kinds: dict[str, int] = {}
    runs: list[str] = []
    errors: dict[tuple[str | None, str], int] = {}
    slowest: list[tuple[float, int, dict[str, Any]]] = []
    unreadable = 0
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind not in RECORD_KINDS:
            unreadable += 1
            continue
        assert isinstance(obj, dict)
        if kind == "hop":
            try:
                node, outcome = str(obj["node"]), str(obj["outcome"])
                duration, sent = float(obj["duration"]), int(obj.get("sent", 0))
            except (KeyError, TypeError, ValueError):
                unreadable += 1
                continue
            tally.add(node, outcome, sent, duration)
            slowest.append((duration, number, obj))
            if len(slowest) > 4 * SLOWEST:
                slowest = sorted(slowest, key=lambda s: (-s[0], s[1]))[:SLOWEST]
        kinds[kind] = kinds.get(kind, 0) + 1
        if obj.get("run") and obj["run"] not in runs:
            runs.append(obj["run"])
        # A failed hop, a dead letter (a failed node, or input that could not
        # be read) and bad input are each an error of their node, or of the input.
        if kind != "run" and (kind != "hop" or outcome == ERROR):
            key = _error_key(obj)
            errors[key] = errors.get(key, 0) + 1
    slowest = sorted(slowest, key=lambda s: (-s[0], s[1]))[:SLOWEST]
    return {
        "file": path,
        "runs": runs,
        "lines": kinds,
        "unreadable": unreadable,
        "nodes": [_node_summary(node) for node in sorted(tally, key=lambda n: n.node)],
        "errors": [
            {"node": node, "type": kind, "count": count}
            for (node, kind), count in sorted(
                errors.items(), key=lambda e: (e[0][0] or "", e[0][1])
            )
        ],
        "slowest": [
            {
                "line": number,
                "node": obj["node"],
                "duration": obj["duration"],
                "source": obj.get("source"),
                "input_line": obj.get("line"),
                "fields": obj.get("fields"),
            }
            for _, number, obj in slowest
        ],
    }


def _error_key(obj: dict[str, Any]) -> tuple[str | None, str]:
    """The node (``None`` for input) and the error type of a failure line."""
    node, error = obj.get("node"), obj.get("error")
    return (
        node if isinstance(node, str) else None,
        str(error.get("type")) if isinstance(error, dict) else "?",
    )


def _node_summary(node: NodeTally) -> dict[str, Any]:
    return {
        "node": node.node,
        "hops": node.hops,
        "sent": node.sent,
        "errors": node.errors,
        "p50": node.quantile(0.5),
        "p95": node.quantile(0.95),
        "max": node.longest,
        "total": round(node.total, 9),
    }
