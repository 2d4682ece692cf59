"""What ``emit inspect`` reports: a Router described as plain data, with its problems.

:func:`describe` turns a graph into a dict that :func:`json.dumps` takes as it
is: the router's kind, its nodes in registration order, the resolved routes
and the problems found.  Keys come in a fixed order and lists are ordered by
registration (which is also the order messages are dispatched in) or sorted,
so the same graph always gives the same document, byte for byte.

The problems are things a graph may legally hold but that are usually a
mistake: a pattern that matches nothing, a node no input can reach, a cycle,
two nodes one short name would both match, a graph without input.

:func:`describe_live` adds what ``-u`` shows: the graph's RQ queues as a
Redis holds them at that moment, their jobs counted by state and the workers
listening on them.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import BaseRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.worker import BaseWorker

from .errors import EmitError
from .messages import ENTRY_POINT
from .node import NodeSpec
from .patterns import NameIndex, Pattern
from .router.core import Router
from .worker import graph_queues

#: Version of the document's layout; raised when a key changes meaning or goes.
SCHEMA_VERSION = 1

#: Every kind of problem, in the order they are reported.
PROBLEM_KINDS = (
    "no_entry_point",
    "unmatched_subscription",
    "unmatched_ignore",
    "unreachable",
    "cycle",
    "same_short_name",
)

#: What the jobs of a queue are counted by, in the order they are reported.
JOB_STATES = ("queued", "started", "failed", "finished", "deferred", "scheduled")

#: Seconds ``-u`` waits for Redis to accept the connection.
CONNECT_TIMEOUT = 5.0

# Default reprs (and some others) hold memory addresses, which differ per run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# user:password@ in a URL; the password is masked in everything emit prints.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")


def describe(router: Router) -> dict[str, Any]:
    """The graph as a JSON-ready dict: kind, nodes, routes and problems."""
    kind = type(router)
    return {
        "emit_inspect": SCHEMA_VERSION,
        "router": f"{kind.__module__}.{kind.__qualname__}",
        "max_hops": router.max_hops,
        "entry_points": list(router.entry_points),
        "nodes": [describe_node(spec, router) for spec in router.nodes.values()],
        "routes": {origin: list(router.subscribers(origin)) for origin in _origins(router)},
        "problems": find_problems(router),
    }


def describe_node(spec: NodeSpec, router: Router | None = None) -> dict[str, Any]:
    """One node: its fields and patterns as declared, its options made JSON-safe."""
    options = dict(spec.options)
    # A node's ``celery_task`` is a task decorator whose repr names only a
    # closure of Celery's; the task the CeleryRouter made with it names the node.
    task = getattr(router, "tasks", {}).get(spec.name)
    if "celery_task" in options and task is not None:
        options["celery_task"] = task
    return {
        "name": spec.name,
        "fields": list(spec.fields),
        "subscribe_to": [p.text for p in spec.subscribe_to],
        "ignore": [p.text for p in spec.ignore],
        "entry_point": spec.entry_point,
        "options": json_safe(options),
    }


def find_problems(router: Router) -> list[dict[str, Any]]:
    """Every problem of the graph, by kind in :data:`PROBLEM_KINDS` order, then by node."""
    edges = _edges(router)
    return [
        *_entry_problems(router),
        *_pattern_problems(router),
        *_reach_problems(router, edges),
        *_cycle_problems(router, edges),
        *_short_name_problems(router),
    ]


def json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it, the same on every run.

    Options such as a Celery task decorator, an rq ``Retry`` or a Redis
    connection are shown by their repr, without memory addresses; passwords
    in URLs are masked.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return mask_password(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((json_safe(v) for v in value), key=repr)
    if hasattr(value, "connection_pool"):
        return json_safe(_redis_url(value))
    return json_safe(_ADDRESS.sub("", repr(value)))


def mask_password(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def unreachable(connection: Any, exc: BaseException) -> str:
    """The line that says a Redis cannot be reached: where, and why, no password shown."""
    return f"cannot reach Redis at {_redis_url(connection)}: {mask_password(str(exc))}"


# Live state ----------------------------------------------------------------


def describe_live(router: Router, url: str) -> dict[str, Any]:
    """The graph's RQ queues on the Redis at ``url``: their jobs by state, their workers.

    Every queue a node uses (``default`` for a node without ``queue``, as on
    a local router), in the order the nodes were registered.  Nothing in
    Redis is changed, so the counts are read without RQ's cleanup.

    :raises EmitError: ``url`` is no Redis URL, or that Redis cannot be
        reached; the message names the URL with its password masked.
    """
    shown = mask_password(url)
    try:
        connection = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    except ValueError as exc:
        raise EmitError(f"not a Redis URL: {shown} ({exc})") from None
    try:
        queues = {
            name: describe_queue(Queue(name, connection=connection))
            for name in graph_queues(router)
        }
    except RedisError as exc:
        raise EmitError(f"cannot reach Redis at {shown}: {mask_password(str(exc))}") from None
    finally:
        connection.close()
    return {"url": shown, "queues": queues}


def describe_queue(queue: Queue) -> dict[str, Any]:
    """One queue: its jobs counted by :data:`JOB_STATES`, then its workers by name."""
    registries = (
        queue.started_job_registry,
        queue.failed_job_registry,
        queue.finished_job_registry,
        queue.deferred_job_registry,
        queue.scheduled_job_registry,
    )
    counts = [queue.count, *(_held(registry) for registry in registries)]
    workers = sorted(Worker.all(queue=queue), key=attrgetter("name"))
    return {
        **dict(zip(JOB_STATES, counts, strict=True)),
        "workers": [describe_worker(worker) for worker in workers],
    }


def describe_worker(worker: BaseWorker) -> dict[str, Any]:
    """One worker as RQ registered it: name, state, the job in hand, pid and host."""
    return {
        "name": worker.name,
        "state": worker.get_state(),
        "current_job": worker.get_current_job_id(),
        "pid": worker.pid,
        "hostname": worker.hostname,
    }


def _held(registry: BaseRegistry) -> int:
    # RQ's own count cleans the registry up first, and that cleanup fails the
    # jobs of dead workers and runs their failure callbacks, which looking
    # must not do.  Finished and failed entries past their time are left out
    # here instead, as that cleanup would drop them.
    held = registry.get_job_count(cleanup=False)
    if isinstance(registry, FinishedJobRegistry | FailedJobRegistry):
        held -= len(registry.get_expired_job_ids())
    return held


# Problems ------------------------------------------------------------------


def _problem(
    kind: str, nodes: Iterable[str], text: str, pattern: str | None = None
) -> dict[str, Any]:
    return {"kind": kind, "nodes": list(nodes), "pattern": pattern, "text": text}


def _entry_problems(router: Router) -> list[dict[str, Any]]:
    # What counts is whether input reaches any node: a ``.+`` subscriber
    # receives it too, and makes the router callable without an entry point.
    if router.subscribers(ENTRY_POINT):
        return []
    return [
        _problem(
            "no_entry_point",
            [],
            "no node receives the graph's input; mark one with entry_point=True",
        )
    ]


def _pattern_problems(router: Router) -> list[dict[str, Any]]:
    index = NameIndex([ENTRY_POINT, *router.nodes])
    found = []
    for spec in router.nodes.values():
        for pattern in spec.subscribe_to:
            if not _matches_other(pattern, index, spec.name):
                text = f"node {spec.name} subscribes to {pattern.text!r}, " + _no_match(
                    pattern, index, spec.name
                )
                found.append(_problem("unmatched_subscription", [spec.name], text, pattern.text))
        for pattern in spec.ignore:
            if not _matches_other(pattern, index, spec.name):
                text = f"node {spec.name} ignores {pattern.text!r}, " + _no_match(
                    pattern, index, spec.name
                )
                found.append(_problem("unmatched_ignore", [spec.name], text, pattern.text))
    return found


def _matches_other(pattern: Pattern, index: NameIndex, own: str) -> bool:
    # A pattern never subscribes a node to itself, so matching only its own
    # name is matching nothing.
    return bool(pattern.select(index) - {own})


def _no_match(pattern: Pattern, index: NameIndex, own: str) -> str:
    if pattern.select(index):
        return "which matches only the node itself (a node never receives its own messages)"
    return f"which matches no node name (nor {ENTRY_POINT}, the graph's input)"


def _reach_problems(router: Router, edges: dict[str, list[str]]) -> list[dict[str, Any]]:
    # Without any input every node is unreachable; the one no_entry_point
    # problem says so, instead of one line per node.
    if not router.subscribers(ENTRY_POINT):
        return []
    reached = _reachable(edges, ENTRY_POINT)
    senders: dict[str, list[str]] = {name: [] for name in router.nodes}
    for origin in router.nodes:
        for destination in edges[origin]:
            senders[destination].append(origin)
    found = []
    for name in router.nodes:
        if name in reached:
            continue
        if senders[name]:
            why = f"its only senders are nodes the input never reaches ({', '.join(senders[name])})"
        else:
            why = "it is not an entry point and no route leads to it"
        found.append(_problem("unreachable", [name], f"node {name} never gets a message: {why}"))
    return found


def _cycle_problems(router: Router, edges: dict[str, list[str]]) -> list[dict[str, Any]]:
    position = {name: i for i, name in enumerate(router.nodes)}
    components = [c for c in _strongly_connected(list(router.nodes), edges) if len(c) > 1]
    components.sort(key=lambda c: min(position[n] for n in c))
    found = []
    for component in components:
        members = set(component)
        loop = _shortest_loop(min(component, key=position.__getitem__), edges, members)
        text = " -> ".join([*loop, loop[0]])
        inner = sum(d in members for n in component for d in edges[n])
        # A strongly connected part with more routes than nodes holds more
        # than one loop; naming them all could take exponential time.
        if inner > len(component):
            others = ", ".join(sorted(members - set(loop)))
            text += "; more loops run through " + (
                f"these nodes and {others}" if others else "these nodes"
            )
        text += f"; a message that goes round is dropped after {router.max_hops} hops"
        found.append(_problem("cycle", loop, text))
    return found


def _short_name_problems(router: Router) -> list[dict[str, Any]]:
    by_short: dict[str, list[str]] = {}
    for name in router.nodes:
        by_short.setdefault(name.rpartition(".")[2], []).append(name)
    found = []
    for short, names in by_short.items():
        if len(names) > 1:
            text = (
                f"nodes {', '.join(names)} share the short name {short!r}, "
                f"so a subscription to {short!r} receives from all of them"
            )
            found.append(_problem("same_short_name", names, text))
    return found


# Graph walking -------------------------------------------------------------


def _origins(router: Router) -> list[str]:
    return [ENTRY_POINT, *router.nodes]


def _edges(router: Router) -> dict[str, list[str]]:
    """Origin to destinations, the input included, in dispatch order."""
    return {origin: list(router.subscribers(origin)) for origin in _origins(router)}


def _reachable(edges: dict[str, list[str]], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for destination in edges[todo.pop()]:
            if destination not in seen:
                seen.add(destination)
                todo.append(destination)
    return seen


def _strongly_connected(names: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, with an explicit stack.

    Iterative because a long chain of nodes would exceed Python's recursion
    limit, as the dispatcher would have in the 2013 library.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []  # the nodes being visited, deepest last

    def enter(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        work.append((name, iter(edges[name])))

    for root in names:
        if root in index:
            continue
        enter(root)
        while work:
            name, destinations = work[-1]
            for destination in destinations:
                if destination not in index:
                    enter(destination)
                    break
                if destination in on_stack:
                    low[name] = min(low[name], index[destination])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[name])
                if low[name] == index[name]:
                    found.append(_pop_component(stack, on_stack, name))
    return found


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    component = []
    while True:
        name = stack.pop()
        on_stack.discard(name)
        component.append(name)
        if name == root:
            return component


def _shortest_loop(start: str, edges: dict[str, list[str]], members: set[str]) -> list[str]:
    """The shortest loop from ``start`` back to it inside ``members``, breadth first."""
    came_from: dict[str, str] = {}
    todo = deque([start])
    while todo:
        name = todo.popleft()
        for destination in edges[name]:
            if destination == start:
                return _path(came_from, name, start)
            if destination in members and destination not in came_from:
                came_from[destination] = name
                todo.append(destination)
    raise AssertionError(f"{start} is in a strongly connected part but on no loop")


def _path(came_from: dict[str, str], last: str, start: str) -> list[str]:
    path = [last]
    while path[-1] != start:
        path.append(came_from[path[-1]])
    return path[::-1]


def _redis_url(connection: Any) -> str:
    """A Redis connection as ``redis://host:port/db``; its repr varies by version."""
    kwargs = getattr(connection.connection_pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
