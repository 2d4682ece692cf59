"""Exceptions raised by emit.

Everything emit raises on purpose derives from :class:`EmitError`.  Each class
says when it is raised, keeps what it is about as attributes, and renders a
message that names the node, field or line involved and, where one exists, the
fix.
"""

from __future__ import annotations

import shlex
from typing import Any


class EmitError(Exception):
    """Root of every error emit raises on purpose."""


class GraphError(EmitError):
    """The graph cannot be built as declared (raised at registration)."""


class DuplicateNodeError(GraphError):
    """Two nodes were registered under one name."""

    def __init__(self, name: str, first: Any, second: Any) -> None:
        self.name = name
        self.first = first
        self.second = second
        super().__init__(
            f"two nodes are named {name!r}: {_where(first)} and {_where(second)}; "
            "rename one of the functions or register it in another module"
        )


class PatternError(GraphError):
    """A subscription or ignore pattern is not a valid regular expression."""

    def __init__(self, node: str, pattern: str, reason: str) -> None:
        self.node = node
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"node {node!r}: bad pattern {pattern!r}: {reason}")


class OptionError(GraphError):
    """A node was given an option its router does not know."""


class MessageError(EmitError, TypeError):
    """A node was called with something that cannot become a message."""


class ResultError(EmitError, ValueError):
    """A node returned something that does not fit its declared fields."""

    def __init__(self, node: str, fields: tuple[str, ...], problem: str) -> None:
        self.node = node
        self.fields = fields
        self.problem = problem
        super().__init__(f"node {node!r} (fields {_fields(fields)}) {problem}")


class ValueTypeError(ResultError):
    """A field value cannot be carried as JSON (a set, bytes, NaN, ...)."""

    def __init__(self, node: str, fields: tuple[str, ...], field: str, problem: str) -> None:
        self.field = field
        super().__init__(node, fields, f"field {field!r}: {problem}")


class HopLimitError(EmitError):
    """A message passed more nodes than the router's hop limit, usually a cycle."""

    def __init__(self, node: str, limit: int, path: list[str]) -> None:
        self.node = node
        self.limit = limit
        self.path = path
        super().__init__(
            f"message dropped before {node!r}: it passed the hop limit of {limit} "
            f"({describe_path(path)}); break the cycle or raise max_hops"
        )


class MessageTooBigError(EmitError):
    """A message is bigger, serialised, than its RQ router's ``max_message_bytes``.

    Raised (or reported, in a run) before anything of its batch is enqueued;
    the message is never truncated.
    """

    def __init__(self, sender: str, node: str, size: int, limit: int) -> None:
        # Imported here: messages imports this module.
        from .messages import ENTRY_POINT

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


class RunStopped(EmitError):
    """The run stopped (a signal, a node calling sys.exit) before a record was finished."""


class LoadError(EmitError):
    """A router locator could not be turned into a Router (import or lookup failed)."""


class ShellNodeError(EmitError):
    """A shell node's child process failed one message.

    Raised when the command cannot start, exits non-zero, writes output that
    is not the node's protocol, stops in the middle of a frame, or does not
    answer within the node's ``timeout``.
    """

    def __init__(self, node: str, command: list[str], problem: str) -> None:
        self.node = node
        self.command = command
        self.problem = problem
        shown = shlex.join(command).replace("\n", "\\n")
        if len(shown) > 80:  # a script given inline would bury the problem
            shown = shown[:77] + "..."
        super().__init__(f"shell node {node!r} ({shown}) {problem}")


def describe_path(path: list[str]) -> str:
    """Show the cycle at the end of a path of node names, or the path's tail."""
    last = path[-1]
    earlier = len(path) - 2 - path[-2::-1].index(last) if last in path[:-1] else -1
    if earlier >= 0:
        return "cycle " + " -> ".join(path[earlier:])
    return "path ... -> " + " -> ".join(path[-5:])


def _bytes(size: int) -> str:
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"


def _fields(fields: tuple[str, ...]) -> str:
    return repr(tuple(fields))


def _where(func: Any) -> str:
    code = getattr(func, "__code__", None) or getattr(
        type(func).__call__ if callable(func) else None, "__code__", None
    )
    if code is None:
        return repr(func)
    return f"{getattr(func, '__qualname__', func)!s} ({code.co_filename}:{code.co_firstlineno})"
