"""In-process dispatch: the graph run depth-first with an explicit stack.

The 2013 library routed by recursion, so a long chain or a cycle overflowed
the interpreter's stack.  Here the loop in :meth:`LocalEngine._drain` keeps a
list of frames, each an iterator of ``(node, message)`` deliveries still to
make; it takes the next delivery from the top frame, runs the node, and pushes
a frame for what the node sent.  That gives depth-first order (subscribers in
registration order), and a generator's items are routed as they are yielded,
so an endless generator piped into ``head`` stops at once and a failure
part-way keeps what went before.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from itertools import count
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from .errors import HopLimitError, ResultError
from .messages import ENTRY_POINT, Message, _clone, _copy

if TYPE_CHECKING:
    from .node import NodeSpec
    from .router.core import Router

log = logging.getLogger(__name__)

#: ``on_output(node, fields)``: a selected node produced a message.
OutputHandler = Callable[["NodeSpec", "dict[str, Any]"], None]
#: ``on_error(node_name, message, exc)``: a hop failed; raise to stop the run.
ErrorHandler = Callable[[str, Message, BaseException], None]

Frame = Iterator["tuple[NodeSpec, Message]"]


class StopRun(BaseException):
    """Raised by an output or error handler to end the run at once.

    A BaseException, so the ``except Exception`` that guards each node's own
    code never mistakes it for a failure of that node.
    """


def reraise(node: str, message: Message, exc: BaseException) -> None:
    """The default error handler: the node's exception reaches the caller."""
    exc.add_note(f"raised in emit node {node!r} on {message!r}")
    raise exc


class LocalEngine:
    """Runs messages through a router's graph in this process.

    :param on_output: called with each message a selected node produces.
    :param outputs: names of the selected nodes; default, the sinks (nodes
        that no other node subscribes to).
    :param on_error: called for each failed hop; the default re-raises.
    """

    def __init__(
        self,
        router: Router,
        *,
        on_output: OutputHandler | None = None,
        outputs: set[str] | frozenset[str] | None = None,
        on_error: ErrorHandler = reraise,
        run_id: str | None = None,
    ) -> None:
        self.router = router
        self.routes = routes = router.routes
        if outputs is None:
            outputs = {name for name, subs in routes.items() if not subs}
        self.outputs = frozenset(outputs)
        self.on_output = on_output
        self.on_error = on_error
        self.run_id = run_id or uuid.uuid4().hex
        self.max_hops = router.max_hops
        self.message_class = router.message_class
        self._next_hop = count(1).__next__
        self._trail: list[str] = []
        # Per node, resolved once a run: its subscribers and whether its
        # messages go to on_output, so the loop does one dict lookup a hop.
        self._plans = {
            name: (subs, on_output if on_output is not None and name in self.outputs else None)
            for name, subs in routes.items()
        }

    def send(
        self,
        message: Message,
        *,
        origin: str = ENTRY_POINT,
        collect: bool = False,
        route: bool = True,
    ) -> tuple[Message, ...]:
        """Deliver ``message`` from ``origin`` to its subscribers and run to the end.

        With ``route`` false the subscribers run alone, as a node called
        directly with routing disabled does, and what they send is returned.
        """
        subs = self.routes.get(origin, ())
        message._meta = (origin, self.run_id, message._meta[2], message._meta[3])
        # Every subscriber gets its own copy, made before any of them runs.
        copies = [message, *(_clone(message) for _ in subs[1:])] if subs else []
        if not route:
            return tuple(
                out
                for sub, copy in zip(subs, copies, strict=True)
                for out in self.call(sub, copy, route=False)
            )
        return self._run(list(zip(subs, copies, strict=True)), collect)

    def call(self, spec: NodeSpec, message: Message, *, route: bool = True) -> tuple[Message, ...]:
        """Run one node on ``message``; route what it sends unless ``route`` is false."""
        if route:
            return self._run([(spec, message)], True)
        result = spec.func(message)
        items = result if type(result) is GeneratorType else (result,)
        meta = (spec.name, self.run_id, message._hop, message._meta[3] + 1)
        shaped = (spec.shape(item) for item in items)
        return tuple(self._message(fields, meta) for fields in shaped if fields is not None)

    def deliver(self, spec: NodeSpec, message: Message) -> None:
        """Run one node on ``message`` and route what it sends, keeping nothing.

        How ``emit replay --node`` sends a recorded message to one node.
        """
        message._meta = (message._meta[0], self.run_id, None, 0)
        self._run([(spec, message)], False)

    # The loop --------------------------------------------------------------

    def _run(
        self, deliveries: list[tuple[NodeSpec, Message]], collect: bool
    ) -> tuple[Message, ...]:
        """Run each first delivery and everything it leads to, keeping its outputs."""
        kept: list[Message] | None = [] if collect else None
        for spec, message in deliveries:
            message._hop = self._next_hop()
            self._trail = []
            if message._meta[3] >= self.max_hops:
                error = HopLimitError(spec.name, self.max_hops, [message._origin, spec.name])
                self.on_error(spec.name, message, error)
                continue
            try:
                result = spec.func(message)
            except Exception as exc:
                self.on_error(spec.name, message, exc)
                continue
            items = result if type(result) is GeneratorType else (result,)
            self._trail.append(spec.name)
            self._drain([self._fanout(spec, message, items, kept)])
        return tuple(kept) if kept is not None else ()

    def _drain(self, stack: list[Frame]) -> None:
        push = stack.append
        pop = stack.pop
        trail = self._trail  # names of the nodes whose frames are on the stack
        fail = self.on_error
        plans = self._plans
        fanout = self._fanout
        deliver = self._deliveries
        debug = log.isEnabledFor(logging.DEBUG)
        while stack:
            try:
                spec, message = next(stack[-1])
            except StopIteration:
                pop()
                trail.pop()
                continue
            if debug:
                log.debug("hop %r: %s -> %s", message._hop, message._origin, spec.name)
            try:
                result = spec.func(message)
            except Exception as exc:
                fail(spec.name, message, exc)
                continue
            if type(result) is GeneratorType:
                push(fanout(spec, message, result, None))
                trail.append(spec.name)
                continue

            # A plain return value, by far the common case, is handled here
            # without building a generator frame for it.
            try:
                fields = spec.shape(result)
            except ResultError as exc:
                fail(spec.name, message, exc)
                continue
            if fields is None:
                continue
            subs, emit = plans[spec.name]
            if emit is not None:
                emit(spec, fields)
            if subs:
                push(iter(deliver(spec, message, fields, subs)))
                trail.append(spec.name)

    def _fanout(
        self, spec: NodeSpec, parent: Message, items: Any, keep: list[Message] | None
    ) -> Frame:
        """Shape each item a node sent and pair it with each subscriber, lazily.

        Runs as a frame on the stack, so the node's name is the trail's last.
        """
        name = spec.name
        shape = spec.shape
        fail = self.on_error
        subs, emit = self._plans[name]
        meta = (name, self.run_id, parent._hop, parent._meta[3] + 1)
        # Only what the node's own generator raises is the node's failure: an
        # exception from a handler (on_output, on_error) is marked as escaped and
        # passes through, so on_error never hears of its own exception.  A try
        # block costs nothing until something is raised.
        escaped: BaseException | None = None
        try:
            if subs and meta[3] >= self.max_hops:
                for item in items:
                    fields = shape(item)
                    if fields is not None:
                        try:
                            self._hop_limit(self._message(fields, meta), self._trail, subs)
                        except BaseException as exc:
                            escaped = exc
                            raise
                        return
            elif len(subs) == 1 and keep is None:
                # One subscriber, the word-count shape: the delivery is built inline.
                sub = subs[0]
                cls = self.message_class
                new = object.__new__
                next_hop = self._next_hop
                for item in items:
                    try:
                        try:
                            fields = shape(item)
                        except ResultError as exc:
                            fail(name, parent, exc)
                            continue
                        if fields is None:
                            continue
                        if emit is not None:
                            emit(spec, fields)
                        message = new(cls)
                        message.__dict__ = fields
                        message._meta = meta
                        message._hop = next_hop()
                        yield sub, message
                    except BaseException as exc:
                        escaped = exc
                        raise
            else:
                for item in items:
                    try:
                        try:
                            fields = shape(item)
                        except ResultError as exc:
                            fail(name, parent, exc)
                            continue
                        if fields is None:
                            continue
                        if emit is not None:
                            emit(spec, fields)
                        if keep is not None:
                            keep.append(self._message(_copy(fields) if subs else fields, meta))
                        if subs:
                            yield from self._deliveries(spec, parent, fields, subs, meta)
                    except BaseException as exc:
                        escaped = exc
                        raise
        except Exception as exc:
            if exc is escaped:
                raise
            fail(name, parent, exc)

    def _deliveries(
        self,
        spec: NodeSpec,
        parent: Message,
        fields: dict[str, Any],
        subs: tuple[NodeSpec, ...],
        meta: tuple[Any, ...] | None = None,
    ) -> list[tuple[NodeSpec, Message]]:
        """One message per subscriber, each with fields of its own when shared."""
        if meta is None:
            meta = (spec.name, self.run_id, parent._hop, parent._meta[3] + 1)
            if meta[3] >= self.max_hops:
                self._hop_limit(self._message(fields, meta), [*self._trail, spec.name], subs)
                return []
        if len(subs) == 1:
            return [(subs[0], self._message(fields, meta))]
        # Copies are made before any subscriber runs: a subscriber that
        # changes a list in its message must not change what the next one sees.
        return [(sub, self._message(_copy(fields), meta)) for sub in subs]

    def _message(self, fields: dict[str, Any], meta: tuple[Any, ...]) -> Message:
        message: Message = object.__new__(self.message_class)
        message.__dict__ = fields
        message._meta = meta
        message._hop = self._next_hop()
        return message

    def _hop_limit(self, message: Message, path: list[str], subs: tuple[NodeSpec, ...]) -> None:
        """Drop a message that would pass the hop limit, showing the path it took."""
        for sub in subs:
            error = HopLimitError(sub.name, self.max_hops, [*path, sub.name])
            self.on_error(sub.name, message, error)
