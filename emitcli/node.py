"""The registered form of a node: its name, function, fields and patterns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import GraphError
from .patterns import Pattern
from .results import Shaper, make_shaper


@dataclass(eq=False)
class NodeSpec:
    """Everything the router knows about one node.

    ``func`` is the user's callable as written (for a decorated class, an
    instance of it); ``shape`` turns one of its results into a field dict.
    """

    name: str
    func: Callable[..., Any]
    fields: tuple[str, ...]
    subscribe_to: tuple[Pattern, ...] = ()
    ignore: tuple[Pattern, ...] = ()
    entry_point: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    shape: Shaper = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.shape = make_shaper(self.name, self.fields)


def as_fields(node: str, fields: Any) -> tuple[str, ...]:
    """Check a node's declared fields: strings, each once, in order."""
    if isinstance(fields, str):
        fields = (fields,)
    try:
        names = tuple(fields)
    except TypeError:
        raise GraphError(
            f"node {node!r}: fields must be a string or a sequence of strings, "
            f"not {type(fields).__name__}"
        ) from None
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise GraphError(
                f"node {node!r}: field {name!r} is not a valid name; "
                "fields are Python identifiers such as 'word' or 'count'"
            )
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise GraphError(f"node {node!r}: field(s) {twice} declared more than once")
    return names
