"""Distribution on Celery: every hop a Celery task named after its node.

As in the 2013 library, the router is given the app's task decorator
(``CeleryRouter(celery_task=app.task)``) and a node may bring its own
(``celery_task=app.task(rate_limit="5/s")``) for per-task settings.  Tasks
carry the message's fields and its metadata as JSON; the worker imports the
modules that define the nodes (Celery's ``imports``), which registers them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from ..errors import GraphError, HopLimitError
from ..messages import ENTRY_POINT, Message
from ..node import NodeSpec
from .core import Router

Meta = list[Any]  # [origin, run, parent hop, hops], as the message's _meta


class CeleryRouter(Router):
    """A Router whose hops are Celery tasks.

    :param celery_task: the app's task decorator, usually ``app.task``.
    """

    node_options = frozenset({"celery_task"})

    def __init__(self, celery_task: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.celery_task = celery_task
        self.tasks: dict[str, Any] = {}

    def wrap_node(self, node: Any, options: dict[str, Any]) -> Any:
        """Make the node's Celery task, named after the node, and attach it as ``node.task``."""
        name = node.node_name
        decorator = options.get("celery_task") or self.celery_task
        router = self

        def hop(fields: dict[str, Any], meta: Meta | None = None) -> list[dict[str, Any]]:
            return router.run_hop(name, fields, meta)

        # Celery names a task module.function; these make that the node's name.
        module, _, function = name.rpartition(".")
        hop.__module__ = module
        hop.__name__ = hop.__qualname__ = function
        task = decorator(serializer="json")(hop) if _wants_options(decorator) else decorator(hop)
        self.tasks[name] = task
        node.task = task
        node.delay = lambda *args, **kwargs: self.dispatch(
            ENTRY_POINT, name, self.get_message_from_call(*args, **kwargs)
        )
        return node

    def wrap_as_node(self, func: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """Calling a node runs it here and sends what it returns on as tasks."""
        node = super().wrap_as_node(func, name)
        node_name = node.node_name  # type: ignore[attr-defined]

        def call(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            message = self.get_message_from_call(*args, **kwargs)
            return self.run_hop(node_name, message.__dict__, None)

        call.node_name = node_name  # type: ignore[attr-defined]
        call.__wrapped__ = func  # type: ignore[attr-defined]
        call.__doc__ = func.__doc__
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Send one message to every entry point as tasks; return their AsyncResults."""
        message = self.get_message_from_call(*args, **kwargs)
        entries = self.subscribers(ENTRY_POINT)
        if not entries:
            raise GraphError("the router has no entry point; mark a node with entry_point=True")
        message._meta = (ENTRY_POINT, uuid.uuid4().hex, None, 0)
        return tuple(self.dispatch(ENTRY_POINT, name, message) for name in entries)

    def dispatch(self, origin: str, destination: str, message: Message) -> Any:
        """Send ``message`` to ``destination``'s task."""
        if not self.routing_enabled:
            return None
        _, run, parent, hops = message._meta
        meta = [origin, run, parent, hops]
        return self.tasks[destination].delay(message.as_dict(), meta)

    def run_hop(self, name: str, fields: dict[str, Any], meta: Meta | None) -> list[dict[str, Any]]:
        """Run one node on one message; send each output to the subscribers' tasks."""
        spec = self._spec(name)
        origin, run, parent, hops = meta or [ENTRY_POINT, uuid.uuid4().hex, None, 0]
        if hops >= self.max_hops:
            raise HopLimitError(name, self.max_hops, [origin, name])
        message = Message(fields)
        hop = uuid.uuid4().hex
        message._meta = (origin, run, parent, hops)
        message._hop = hop  # type: ignore[assignment]  # tasks run anywhere: a uuid, not a count
        outputs = []
        for shaped in self._shaped(spec, spec.func(message)):
            outputs.append(shaped)
            sent = Message(shaped)
            sent._meta = (name, run, hop, hops + 1)  # type: ignore[assignment]
            self.route(name, sent)
        return outputs

    @staticmethod
    def _shaped(spec: NodeSpec, result: Any) -> Any:
        for item in result if type(result) is GeneratorType else (result,):
            shaped = spec.shape(item)
            if shaped is not None:
                yield shaped


def _wants_options(decorator: Any) -> bool:
    """Whether ``decorator`` is ``app.task`` itself rather than ``app.task(...)``."""
    return getattr(decorator, "__name__", "") == "task" and hasattr(decorator, "__self__")
