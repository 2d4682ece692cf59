"""The Router: registration of nodes, route resolution, and in-process dispatch.

A Router holds the graph.  Backends change how a hop travels by overriding
:meth:`Router.dispatch` and :meth:`Router.wrap_node`; the in-process default
hands every hop to :class:`emitcli.local.LocalEngine`, which runs the graph
depth-first with an explicit stack.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from ..errors import DuplicateNodeError, GraphError, MessageError, OptionError
from ..messages import ENTRY_POINT, Message, _clone
from ..node import NodeSpec, as_fields
from ..patterns import NameIndex, as_patterns

F = TypeVar("F", bound=Callable[..., Any])

#: Hops a message may pass before it is dropped as a probable cycle.
DEFAULT_MAX_HOPS = 100


class Router:
    """Holds the nodes of a graph and routes messages between them.

    :param message_class: :class:`Message` or a subclass, handed to nodes.
    :param node_modules: modules that define nodes, imported by
        :meth:`resolve_node_modules` (a worker calls it before running jobs).
    :param node_package: the package relative ``node_modules`` are based on.
    :param max_hops: hops one message may pass before it is dropped.
    """

    #: Options :meth:`node` accepts beyond its named arguments; a backend
    #: declares its own.  ``None`` accepts anything (for subclasses written
    #: before options were checked).
    node_options: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(
        self,
        message_class: type[Message] | None = None,
        node_modules: Iterable[str] | None = None,
        node_package: str | None = None,
        *,
        max_hops: int = DEFAULT_MAX_HOPS,
    ) -> None:
        message_class = message_class or Message
        if not (isinstance(message_class, type) and issubclass(message_class, Message)):
            raise GraphError(f"message_class must be Message or a subclass, not {message_class!r}")
        if not isinstance(max_hops, int) or max_hops < 1:
            raise GraphError(f"max_hops must be a positive integer, not {max_hops!r}")
        self.message_class = message_class
        self.node_modules = list(node_modules or [])
        self.node_package = node_package
        self.max_hops = max_hops
        self.logger = logging.getLogger("emitcli.router")

        self.nodes: dict[str, NodeSpec] = {}
        self.functions: dict[str, Callable[..., Any]] = {}
        self.fields: dict[str, tuple[str, ...]] = {}
        self.entry_points: list[str] = []
        self.routing_enabled = True
        self._routes: dict[str, tuple[NodeSpec, ...]] | None = None

    # Registration ----------------------------------------------------------

    def node(
        self,
        fields: str | Iterable[str],
        subscribe_to: str | Iterable[str] | None = None,
        entry_point: bool = False,
        ignore: str | Iterable[str] | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorate a function (or a callable class) to make it a node.

        ``fields`` names what it returns; ``subscribe_to`` and ``ignore`` are
        patterns over other nodes' names; ``entry_point`` makes it receive the
        router's own input.  Other keywords are backend options (for example
        ``queue`` on RQ) and are checked against :attr:`node_options`.
        """

        def decorator(func: F) -> F:
            target: Callable[..., Any] = func() if inspect.isclass(func) else func  # type: ignore[assignment]
            name = self.get_name(func)
            self._check_options(name, options)
            self.register(name, target, fields, subscribe_to, entry_point, ignore, options=options)
            node = self.wrap_node(self.wrap_as_node(target, name), dict(options))
            self.functions[name] = node
            return node  # type: ignore[return-value]

        return decorator

    def get_name(self, func: Any) -> str:
        """The name a node is known by: ``module.qualname`` (a class's for an instance)."""
        if not (inspect.isfunction(func) or inspect.isclass(func) or inspect.ismethod(func)):
            func = type(func)
        return f"{func.__module__}.{func.__qualname__}"

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        fields: str | Iterable[str],
        subscribe_to: str | Iterable[str] | None = None,
        entry_point: bool = False,
        ignore: str | Iterable[str] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> NodeSpec:
        """Add a named function to the graph; refuse a name taken by another function."""
        spec = NodeSpec(
            name=name,
            func=func,
            fields=as_fields(name, fields),
            subscribe_to=as_patterns(subscribe_to, name),
            ignore=as_patterns(ignore, name),
            entry_point=bool(entry_point),
            options=dict(options or {}),
        )
        old = self.nodes.get(name)
        if old is not None and not _same_definition(old.func, func):
            raise DuplicateNodeError(name, old.func, func)
        self.nodes[name] = spec
        self.fields[name] = spec.fields
        self.functions.setdefault(name, func)
        if spec.entry_point and name not in self.entry_points:
            self.entry_points.append(name)
        self._routes = None
        self.logger.debug("registered node %r with fields %r", name, spec.fields)
        return spec

    def register_route(self, origins: str | Iterable[str] | None, destination: str) -> None:
        """Subscribe ``destination`` to more origin patterns."""
        spec = self._spec(destination)
        spec.subscribe_to += as_patterns(origins, destination)
        self._routes = None

    def register_ignore(self, origins: str | Iterable[str] | None, destination: str) -> None:
        """Make ``destination`` ignore origins matching these patterns."""
        spec = self._spec(destination)
        spec.ignore += as_patterns(origins, destination)
        self._routes = None

    def add_entry_point(self, destination: str) -> None:
        """Make the named node receive the router's own input."""
        spec = self._spec(destination)
        spec.entry_point = True
        if destination not in self.entry_points:
            self.entry_points.append(destination)
        self._routes = None

    def regenerate_routes(self) -> dict[str, tuple[NodeSpec, ...]]:
        """Resolve every origin's subscribers now (done lazily after each change)."""
        index = NameIndex([ENTRY_POINT, *self.nodes])
        found: dict[str, list[NodeSpec]] = {origin: [] for origin in index.names}
        for spec in self.nodes.values():  # registration order, kept per origin
            origins: set[str] = set()
            for pattern in spec.subscribe_to:
                origins |= pattern.select(index)
            for pattern in spec.ignore:
                origins -= pattern.select(index)
            origins.discard(spec.name)  # a pattern never subscribes a node to itself
            if spec.entry_point:
                origins.add(ENTRY_POINT)
            for origin in origins:
                found[origin].append(spec)
        self._routes = {origin: tuple(specs) for origin, specs in found.items()}
        self.logger.debug("resolved routes for %d nodes", len(self.nodes))
        return self._routes

    @property
    def routes(self) -> dict[str, tuple[NodeSpec, ...]]:
        """Origin name to its subscribers, in registration order."""
        routes = self._routes
        return routes if routes is not None else self.regenerate_routes()

    def subscribers(self, origin: str) -> tuple[str, ...]:
        """Names of the nodes a message from ``origin`` goes to."""
        return tuple(s.name for s in self.routes.get(origin, ()))

    def resolve_node_modules(self) -> list[Any]:
        """Import the modules named in ``node_modules`` so their nodes register."""
        package = self.node_package
        modules = []
        for module in self.node_modules:
            if module.startswith(".") and not package:
                raise GraphError(f"node module {module!r} is relative but no node_package is set")
            modules.append(importlib.import_module(module, package))
        return modules

    # Calling ---------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Message, ...]:
        """Send one message to every entry point; return what they produced."""
        message = self.get_message_from_call(*args, **kwargs)
        if not self.routes[ENTRY_POINT]:
            raise GraphError("the router has no entry point; mark a node with entry_point=True")
        # With routing disabled the entry points run alone, as nodes called
        # directly do; the 2013 library ran nothing then and returned nothing.
        return self._engine().send(message, collect=True, route=self.routing_enabled)

    def route(self, origin: str, message: Message) -> None:
        """Send ``message`` from ``origin`` to each of its subscribers."""
        if not self.routing_enabled:
            return
        destinations = self.subscribers(origin)
        # Every subscriber gets its own copy, made before any of them runs.
        copies = [message, *(_clone(message) for _ in destinations[1:])] if destinations else []
        for destination, copy in zip(destinations, copies, strict=True):
            self.dispatch(origin, destination, copy)

    def dispatch(self, origin: str, destination: str, message: Message) -> Any:
        """Run one hop: ``destination`` receives ``message`` from ``origin``."""
        # The sender is metadata: it rides in ``_meta``, never among the fields.
        message._meta = (origin, *message._meta[1:])
        return self._engine().call(self._spec(destination), message, route=self.routing_enabled)

    def get_message_from_call(self, *args: Any, **kwargs: Any) -> Message:
        """Turn a call's arguments (one mapping, a Message, or keywords) into a message."""
        if len(args) == 1 and not kwargs:
            arg = args[0]
            if isinstance(arg, Message):
                return arg
            if isinstance(arg, Mapping):
                return self.message_class(arg)
        elif not args:
            return self.message_class(kwargs)
        raise MessageError(
            "call a node or router with one dict, one Message, or keyword arguments; "
            f"got {len(args)} positional and {len(kwargs)} keyword argument(s)"
        )

    def wrap_result(self, name: str, result: Any) -> tuple[dict[str, Any], ...]:
        """Shape a node's return value (any form) into a tuple of field dicts."""
        spec = self._spec(name)
        items = result if inspect.isgenerator(result) else (result,)
        shaped = (spec.shape(item) for item in items)
        return tuple(fields for fields in shaped if fields is not None)

    def wrap_as_node(self, func: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """The callable a decorated node becomes: build a message, run, route."""
        name = name or self.get_name(func)

        @functools.wraps(func)
        def node(*args: Any, **kwargs: Any) -> tuple[Message, ...]:
            message = self.get_message_from_call(*args, **kwargs)
            return self._engine().call(self.nodes[name], message, route=self.routing_enabled)

        node.node_name = name  # type: ignore[attr-defined]
        return node

    def wrap_node(self, node: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
        """Backend hook: adapt a wrapped node using its options (default: unchanged)."""
        return node

    # Testing helpers -------------------------------------------------------

    def disable_routing(self) -> None:
        """Nodes called directly run alone; their outputs go nowhere."""
        self.routing_enabled = False

    def enable_routing(self) -> None:
        """Undo :meth:`disable_routing`."""
        self.routing_enabled = True

    @contextlib.contextmanager
    def routing_disabled(self) -> Iterator[Router]:
        """``with router.routing_disabled():`` runs nodes alone inside the block."""
        before = self.routing_enabled
        self.routing_enabled = False
        try:
            yield self
        finally:
            self.routing_enabled = before

    # Internals -------------------------------------------------------------

    def _engine(self, **kwargs: Any) -> Any:
        from ..local import LocalEngine

        return LocalEngine(self, **kwargs)

    def _spec(self, name: str) -> NodeSpec:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise GraphError(f"no node named {name!r} in this graph (nodes: {known})") from None

    def _check_options(self, name: str, options: Mapping[str, Any]) -> None:
        allowed = self.node_options
        if allowed is None:
            return
        unknown = sorted(set(options) - allowed)
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise OptionError(
                f"node {name!r}: {type(self).__name__} does not know the option(s) "
                f"{', '.join(unknown)} (it accepts: {accepted})"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self.nodes)} node(s)>"


def _same_definition(a: Any, b: Any) -> bool:
    """Whether two functions are one definition loaded twice (a module reload)."""
    code_a = getattr(a, "__code__", None)
    code_b = getattr(b, "__code__", None)
    if code_a is None or code_b is None:
        return type(a) is type(b) or a is b
    return (code_a.co_filename, code_a.co_firstlineno) == (
        code_b.co_filename,
        code_b.co_firstlineno,
    )
