"""``emit run`` as a library object: records in, JSON lines out, failures kept.

:class:`Runner` feeds records to a :class:`~emitcli.local.LocalEngine`, writes
one JSON object per line for each message a selected node sends, and turns
every failure (a bad input line, a node that raised, a message dropped at the
hop limit) into a report and, when asked, a dead-letter record.  The command
line in :mod:`emitcli.cli` only wires options and the terminal to it.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import EmitError, PatternError, RunStopped
from .inputs import Record
from .local import LocalEngine, StopRun
from .messages import ENTRY_POINT, Message
from .node import NodeSpec
from .patterns import NameIndex, as_patterns
from .router.core import Router
from .trace import EventHandler, HopEvent, TracingEngine

#: The key that names the producing node in each output object.  Fields are
#: Python identifiers, so no field can ever be called this.
NODE_KEY = "@node"


def _line_encoder(ensure_ascii: bool) -> Callable[[Any], str]:
    """A compact JSON encoder for one output object, built once.

    ``JSONEncoder.encode`` sets up its C encoder anew on every call, which cost
    more than the encoding itself at millions of lines; calling the C encoder
    made once is about three times faster.  Pythons without it get the plain way.
    """
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    chunks = make(None, encoder.default, strings, None, ":", ",", False, False, False)
    return lambda value: "".join(chunks(value, 0))


_encode = _line_encoder(ensure_ascii=False)
_encode_ascii = _line_encoder(ensure_ascii=True)


@dataclass
class Failure:
    """One failed record or hop, as reported and as written to a dead-letter file."""

    record: Record
    node: str | None
    error: BaseException | None
    reason: str
    message: dict[str, Any] | None = None

    def line(self) -> str:
        """The one-line report: place, node, error."""
        # Errors of emit's own (a bad result, the hop limit) name the node already.
        named = self.node and f"{self.node!r}" in self.reason
        node = f"node {self.node!r} " if self.node and not named else ""
        return f"{self.record.where}: {node}{self.reason}"

    def as_record(self, run_id: str) -> dict[str, Any]:
        """The dead-letter record: enough for ``emit replay`` to send it again."""
        out: dict[str, Any] = {
            "kind": "dead-letter",
            "run": run_id,
            "source": self.record.source,
            "line": self.record.line,
            "node": self.node,
            "error": {
                "type": type(self.error).__name__ if self.error else "InputError",
                "text": self.reason,
            },
            "message": self.message,
            "input": self.record.fields,
        }
        if self.record.node is not None:
            # The input went to this node, not to the entry points (a replay).
            out["input_node"] = self.record.node
        if self.record.fields is None:
            out.update(self.record.raw_for_record())
        return out


@dataclass
class Stats:
    """Counts of one run, read live by the progress display."""

    records: int = 0
    outputs: int = 0
    errors: int = 0
    bad_input: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def failed(self) -> int:
        return self.errors + self.bad_input


class Runner:
    """Run records through a router's graph in this process.

    :param out: binary stream for the JSON lines, flushed after each line.
    :param outputs: patterns choosing the nodes whose messages are printed;
        default, the graph's sinks.
    :param report: called with each :class:`Failure` as it happens.
    :param dead_letter: text stream for dead-letter JSON lines, or ``None``.
    :param fail_fast: stop at the first failure.
    :param on_event: called with every hop's :class:`~emitcli.trace.HopEvent`,
        marked with the input record it belongs to; without it, hops are not
        timed at all.
    :param on_record_end: called with each record once everything it led to
        has run (and its events have been sent).
    """

    def __init__(
        self,
        router: Router,
        *,
        out: IO[bytes],
        outputs: Iterable[str] = (),
        report: Callable[[Failure], None] = lambda failure: None,
        dead_letter: IO[str] | None = None,
        fail_fast: bool = False,
        on_event: EventHandler | None = None,
        on_record_end: Callable[[Record], None] | None = None,
        run_id: str | None = None,
    ) -> None:
        if not router.routes[ENTRY_POINT]:
            raise EmitError(
                "the graph has no entry point; mark a node with entry_point=True "
                "or call router.add_entry_point(name)"
            )
        self.router = router
        self.out = out
        self.report = report
        self.dead_letter = dead_letter
        self.fail_fast = fail_fast
        self.stats = Stats()
        self.interrupted = False
        self.closed = False
        #: Stopped at a failure by ``fail_fast``.
        self.failed_fast = False
        self.write_error: OSError | None = None
        self._record: Record | None = None
        self._done = True
        self._outputs_before = 0
        self._suffix: dict[str, str] = {}
        self.on_record_end = on_record_end
        chosen = select_nodes(router, outputs) if outputs else None
        if on_event is None:
            self.engine = LocalEngine(
                router,
                on_output=self._write,
                outputs=chosen,
                on_error=self._node_failed,
                run_id=run_id,
            )
        else:

            def hop(event: HopEvent) -> None:
                if self._record is not None:
                    event.source = self._record.source
                    event.line = self._record.line
                on_event(event)

            self.engine = TracingEngine(
                router,
                on_event=hop,
                on_output=self._write,
                outputs=chosen,
                on_error=self._node_failed,
                run_id=run_id,
            )

    @property
    def run_id(self) -> str:
        return self.engine.run_id

    def run(self, records: Iterable[Record]) -> Stats:
        """Process every record (or until stopped); return the counts."""
        stats = self.stats
        send = self.engine.send
        new = self.router.message_class
        ended = self.on_record_end
        try:
            for record in records:
                self._record = record
                self._done = False
                self._outputs_before = stats.outputs
                stats.records += 1
                if record.fields is None:
                    stats.bad_input += 1
                    self._fail(Failure(record, None, None, record.error or "bad input"))
                elif record.node is not None:
                    self.engine.deliver(self.router.nodes[record.node], new(record.fields))
                else:
                    send(new(record.fields))
                self._done = True
                if ended is not None:
                    ended(record)
                if self.interrupted:
                    break
        except StopRun:
            pass
        return stats

    def record_in_flight(self) -> bool:
        """Whether the run stopped part-way through a record."""
        return self._record is not None and not self._done

    def abandon(self, reason: str) -> str:
        """Keep the record in flight in the dead-letter file; return where it was read."""
        assert self._record is not None
        written = self.stats.outputs - self._outputs_before
        if written:
            # A replay prints these again: say so where the record is kept.
            reason += f"; {written:,} of its output lines were printed before"
        self._letter(Failure(self._record, None, RunStopped(reason), reason))
        return self._record.where

    # Output ----------------------------------------------------------------

    def _write(self, spec: NodeSpec, fields: dict[str, Any]) -> None:
        if self.interrupted:
            # Stopped by a signal: the record in flight goes to the dead
            # letters whole, so this line is left for its replay to print.
            raise StopRun
        # The node's key is spliced in before the closing brace rather than
        # copying every message into a new dict with one more key.
        suffix = self._suffix.get(spec.name)
        if suffix is None:
            suffix = self._suffix[spec.name] = "," + _encode({NODE_KEY: spec.name})[1:] + "\n"
        text = _encode(fields)
        text = text[:-1] + suffix if len(text) > 2 else "{" + suffix[1:]
        try:
            line = text.encode()
        except UnicodeEncodeError:
            # A lone surrogate (a "\ud800" escape in JSON input, or made by a
            # node) has no UTF-8 form; JSON's own escape carries it exactly.
            text = _encode_ascii(fields)
            line = (text[:-1] + suffix if len(text) > 2 else "{" + suffix[1:]).encode()
        try:
            self.out.write(line)
            self.out.flush()
        except OSError as exc:
            # The reader went away (``| head``): stop quietly, as Unix filters
            # do.  Any other write error (a full disk) stops the run too, kept
            # apart so it is not taken for a failure of the node that sent the line.
            self.closed = True
            if not isinstance(exc, BrokenPipeError):
                self.write_error = exc
            raise StopRun from None
        self.stats.outputs += 1

    # Failures --------------------------------------------------------------

    def _node_failed(self, node: str, message: Message, exc: BaseException) -> None:
        self.stats.errors += 1
        record = self._record or Record("-", 0, None)
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EmitError) else str(exc)
        if not isinstance(exc, EmitError):
            reason = f"raised {reason}"
        self._fail(Failure(record, node, exc, reason, message.as_dict()))

    def _fail(self, failure: Failure) -> None:
        self.report(failure)
        self._letter(failure)
        if self.fail_fast:
            self.failed_fast = True
            raise StopRun

    def _letter(self, failure: Failure) -> None:
        """Append the failure to the dead-letter file, when there is one."""
        if self.dead_letter is not None:
            self.dead_letter.write(json.dumps(failure.as_record(self.engine.run_id)) + "\n")
            self.dead_letter.flush()


def select_nodes(router: Router, patterns: Iterable[str], option: str = "--output") -> set[str]:
    """Names of the nodes matched by an option's patterns; each must match one."""
    index = NameIndex(router.nodes)
    chosen: set[str] = set()
    try:
        parsed = as_patterns(list(patterns), option)
    except PatternError as exc:
        raise EmitError(f"{option} {exc.pattern!r} is not a valid pattern: {exc.reason}") from None
    for pattern in parsed:
        found = pattern.select(index)
        if not found:
            known = ", ".join(sorted(router.nodes))
            raise EmitError(f"{option} {pattern.text!r} matches no node (nodes: {known})")
        chosen |= found
    return chosen


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()
