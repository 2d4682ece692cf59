"""Distribution on RQ: every hop a job, the messages for one node batched.

One RQ job per message costs milliseconds of worker overhead, far more than a
node usually takes, so the messages a job sends to one node travel together:
a job carries a batch (up to ``batch_size``) and everything it sends is
enqueued at its end, in one Redis transaction.  A batch is delivered at least
once: a job that dies is retried (``retry``) or failed as a whole.

Jobs name the function :func:`run_batch` and carry JSON or msgpack, never
pickle; a job naming anything that is not a node of the graph is refused.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterable
from types import GeneratorType
from typing import Any

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, get_current_job

from ..codec import JSONSerializer, serializer_for
from ..errors import EmitError, GraphError, HopLimitError, OptionError
from ..messages import ENTRY_POINT, Message
from ..node import NodeSpec
from .core import Router

log = logging.getLogger(__name__)

JOB_FUNCTION = "emitcli.router.rq.run_batch"
FAILED_CALLBACK = "emitcli.router.rq.batch_failed"
DEFAULT_BATCH_SIZE = 100
#: How long a run's bookkeeping keys live in Redis after their last change.
RUN_TTL = 24 * 3600

# A job of a worker that dies with an endless generator in hand must not hold
# everything it produced in memory: past this many messages it sends early.
_FLUSH_AFTER = 10


class RQRouter(Router):
    """A Router whose hops are RQ jobs.

    :param redis_connection: the Redis connection jobs are enqueued on (a
        node's ``connection`` option overrides it).
    :param serializer: ``"json"`` (default) or ``"msgpack"``.
    :param batch_size: most messages one job carries (a node's ``batch_size``
        option overrides it).
    :param locator: how a worker finds this router (``app:router``); found by
        looking through the imported modules when not given.
    """

    node_options = frozenset(
        {"queue", "connection", "timeout", "result_ttl", "retry", "batch_size"}
    )

    def __init__(
        self,
        redis_connection: Redis | None = None,
        *args: Any,
        serializer: str = "json",
        batch_size: int = DEFAULT_BATCH_SIZE,
        locator: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise GraphError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.redis_connection = redis_connection
        self.serializer = serializer_for(serializer)
        self.batch_size = batch_size
        self._locator = locator

    # Registration ----------------------------------------------------------

    def _check_options(self, name: str, options: Any) -> None:
        super()._check_options(name, options)
        queue = options.get("queue", "default")
        if not isinstance(queue, str) or not queue:
            raise OptionError(f"node {name!r}: queue must be a non-empty string, not {queue!r}")
        retry_option(name, options.get("retry"))
        size = options.get("batch_size", 1)
        if not isinstance(size, int) or size < 1:
            raise OptionError(f"node {name!r}: batch_size must be a positive integer, not {size!r}")

    def wrap_node(self, node: Any, options: dict[str, Any]) -> Any:
        """Give the node ``delay(**fields)``, which enqueues one message for it."""

        def delay(*args: Any, **kwargs: Any) -> list[Job]:
            message = self.get_message_from_call(*args, **kwargs)
            return self.enqueue(node.node_name, [message.__dict__])

        node.delay = delay
        return node

    # Sending ---------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Job, ...]:  # type: ignore[override]
        """Enqueue one message for every entry point; return the jobs."""
        message = self.get_message_from_call(*args, **kwargs)
        entries = self.subscribers(ENTRY_POINT)
        if not entries:
            raise GraphError("the router has no entry point; mark a node with entry_point=True")
        jobs: list[Job] = []
        for name in entries:
            jobs += self.enqueue(name, [message.as_dict()])
        return tuple(jobs)

    def dispatch(self, origin: str, destination: str, message: Message) -> list[Job]:
        """Enqueue ``message`` for ``destination``, as sent by ``origin``."""
        return self.enqueue(destination, [message.__dict__], origin=origin)

    def enqueue(
        self,
        destination: str,
        messages: Iterable[dict[str, Any]],
        *,
        origin: str = ENTRY_POINT,
        run: str | None = None,
        track: bool = False,
    ) -> list[Job]:
        """Enqueue messages for one node as batched jobs; return the jobs."""
        spec = self._spec(destination)
        items = [[fields, origin, None, 0, None] for fields in messages]
        sender = Sender(self, run or uuid.uuid4().hex, track)
        sender.add(spec, items)
        return sender.send()

    # Finding the graph from a worker --------------------------------------

    @property
    def locator(self) -> str:
        """``module:attr`` by which a worker imports this router."""
        if self._locator is None:
            self._locator = _find_locator(self)
        return self._locator

    @locator.setter
    def locator(self, value: str) -> None:
        self._locator = value

    def check_sendable(self, spec: NodeSpec) -> None:
        """Refuse a node a worker could never import, before anything is enqueued."""
        if spec.name.startswith("__main__."):
            raise GraphError(
                f"node {spec.name!r} is defined in a script run as __main__, which an RQ worker "
                "cannot import; move it into a module and import that from the script"
            )


class Sender:
    """Collects the messages a job (or the command line) sends, then enqueues them.

    Messages for one node are cut into batches; all jobs go out in one Redis
    transaction together with the run's bookkeeping, so a job's sends are
    either all made or not at all.
    """

    def __init__(self, router: RQRouter, run: str, track: bool) -> None:
        self.router = router
        self.run = run
        self.track = track
        self.pending: dict[str, list[list[Any]]] = {}
        self.outputs: list[str] = []
        self.failures: list[str] = []
        self.count = 0

    def add(self, spec: NodeSpec, items: list[list[Any]]) -> None:
        """Queue items (``[fields, origin, parent hop, hops, place]``) for ``spec``."""
        self.router.check_sendable(spec)
        self.pending.setdefault(spec.name, []).extend(items)
        self.count += len(items)

    def send(self, finished: int = 0) -> list[Job]:
        """Enqueue what was added; ``finished`` jobs of this run end with it."""
        router = self.router
        connection = router.redis_connection
        if connection is None:
            raise EmitError("RQRouter has no redis_connection to enqueue on")
        jobs: list[Job] = []
        with connection.pipeline(transaction=True) as pipe:
            for name, items in self.pending.items():
                spec = router.nodes[name]
                jobs += self._enqueue(spec, items, pipe)
            if self.track:
                self._book(pipe, len(jobs) - finished)
            pipe.execute()
        self.pending.clear()
        self.outputs.clear()
        self.failures.clear()
        self.count = 0
        return jobs

    def _enqueue(self, spec: NodeSpec, items: list[list[Any]], pipe: Any) -> list[Job]:
        router = self.router
        options = spec.options
        size = options.get("batch_size", router.batch_size)
        queue = Queue(
            options.get("queue", "default"),
            connection=options.get("connection", router.redis_connection),
            serializer=router.serializer,
        )
        retry = retry_option(spec.name, options.get("retry"))
        datas = [
            Queue.prepare_data(
                JOB_FUNCTION,
                args=(self._payload(spec, items[start : start + size]),),
                timeout=options.get("timeout"),
                result_ttl=options.get("result_ttl", 500),
                retry=retry,
                on_failure=Callback(FAILED_CALLBACK),
                description=f"emit {spec.name} x{len(items[start : start + size])}",
            )
            for start in range(0, len(items), size)
        ]
        return queue.enqueue_many(datas, pipeline=pipe)

    def _payload(self, spec: NodeSpec, items: list[list[Any]]) -> dict[str, Any]:
        return {
            "graph": self.router.locator,
            "node": spec.name,
            "run": self.run,
            "track": self.track,
            "items": items,
        }

    def _book(self, pipe: Any, pending_change: int) -> None:
        keys = run_keys(self.run)
        if pending_change:
            pipe.incrby(keys["pending"], pending_change)
        if self.outputs:
            pipe.rpush(keys["out"], *self.outputs)
        if self.failures:
            pipe.rpush(keys["failed"], *self.failures)
        for key in keys.values():
            pipe.expire(key, RUN_TTL)


# The worker's side ----------------------------------------------------------

_graphs: dict[str, Router] = {}
_preloaded: str | None = None


def preload(router: Router, locator: str) -> None:
    """Make this process run ``router``'s jobs, and refuse jobs of any other graph."""
    global _preloaded
    router.resolve_node_modules()
    if isinstance(router, RQRouter):
        router.locator = locator
    _graphs[locator] = router
    _preloaded = locator


def run_batch(payload: dict[str, Any]) -> dict[str, int]:
    """The RQ job: run one node on a batch of messages and send on what it returns."""
    router = _graph(payload["graph"])
    spec = router.nodes.get(payload["node"])
    if spec is None:
        raise EmitError(
            f"refused: job names {payload['node']!r}, which is not a node of {payload['graph']!r}"
        )
    return Batch(router, spec, payload).run()


def batch_failed(job: Job, connection: Redis, kind: type, value: BaseException, tb: Any) -> None:
    """RQ's failure callback: a batch that will not be retried is reported to its run."""
    if job.retries_left and job.retries_left > 0:
        return
    payload = job.args[0]
    log.error("job %s for node %r failed: %s: %s", job.id, payload["node"], kind.__name__, value)
    if not payload.get("track"):
        return
    keys = run_keys(payload["run"])
    text = f"{kind.__name__}: {value}" if str(value) else kind.__name__
    records = [_failure(payload["node"], kind.__name__, text, item) for item in payload["items"]]
    with connection.pipeline(transaction=True) as pipe:
        pipe.rpush(keys["failed"], *records)
        pipe.decr(keys["pending"])
        for key in keys.values():
            pipe.expire(key, RUN_TTL)
        pipe.execute()


def _graph(locator: str) -> Router:
    router = _graphs.get(locator)
    if router is not None:
        return router
    from ..loader import load_router

    router = load_router(locator)
    if _preloaded is not None:
        if router is not _graphs[_preloaded]:
            # Another name for the same router (app:router, graph:router) is
            # fine; another graph is not what this worker was started for.
            raise EmitError(
                f"refused: this worker runs the graph {_preloaded!r}, the job names {locator!r}"
            )
        _graphs[locator] = router
        return router
    router.resolve_node_modules()
    if isinstance(router, RQRouter):
        router.locator = locator
    _graphs[locator] = router
    return router


class Batch:
    """One job's work: each message through the node, what it sends collected."""

    def __init__(self, router: Router, spec: NodeSpec, payload: dict[str, Any]) -> None:
        if not isinstance(router, RQRouter):
            raise EmitError(f"{payload['graph']!r} is a {type(router).__name__}, not an RQRouter")
        self.router = router
        self.spec = spec
        self.payload = payload
        self.sender = Sender(router, payload["run"], bool(payload.get("track")))
        self.subs = router.routes[spec.name]
        current = get_current_job()
        self.job_id = current.id if current is not None else uuid.uuid4().hex
        self.failed = 0

    def run(self) -> dict[str, int]:
        limit = self.router.batch_size * _FLUSH_AFTER
        for index, item in enumerate(self.payload["items"]):
            self._one(index, item)
            if self.sender.count >= limit:
                self.sender.send()
        self.sender.send(finished=1)
        return {"messages": len(self.payload["items"]), "failed": self.failed}

    def _one(self, index: int, item: list[Any]) -> None:
        fields, origin, parent, hops, where = item
        spec = self.spec
        message = Message(fields)
        hop = f"{self.job_id}:{index}"
        message._meta = (origin, self.payload["run"], parent, hops)
        message._hop = hop  # type: ignore[assignment]  # a job-wide id, not a counter
        if hops >= self.router.max_hops:
            error = HopLimitError(spec.name, self.router.max_hops, [origin, spec.name])
            self._fail(item, error)
            return
        try:
            result = spec.func(message)
            for out in result if type(result) is GeneratorType else (result,):
                shaped = spec.shape(out)
                if shaped is not None:
                    self._send(shaped, hop, hops + 1, where)
        except Exception as exc:
            log.error("node %r failed on %r", spec.name, message, exc_info=True)
            self._fail(item, exc)

    def _send(self, fields: dict[str, Any], hop: str, hops: int, where: Any) -> None:
        name = self.spec.name
        if not self.subs and self.sender.track:
            self.sender.outputs.append(JSONSerializer.dumps({**fields, "@node": name}).decode())
        for sub in self.subs:
            self.sender.add(sub, [[fields, name, hop, hops, where]])

    def _fail(self, item: list[Any], exc: BaseException) -> None:
        self.failed += 1
        if self.sender.track:
            text = str(exc) if isinstance(exc, EmitError) else f"raised {type(exc).__name__}: {exc}"
            self.sender.failures.append(_failure(self.spec.name, type(exc).__name__, text, item))


def _failure(node: str, kind: str, text: str, item: list[Any]) -> str:
    fields, origin, _parent, _hops, where = item
    record = {
        "kind": "failure",
        "node": node,
        "origin": origin,
        "where": where,
        "error": {"type": kind, "text": text[:2000]},
        "message": fields,
    }
    return JSONSerializer.dumps(record).decode()


def run_keys(run: str) -> dict[str, str]:
    """The Redis keys of a run: jobs pending, output lines, failure records."""
    return {
        "pending": f"emit:run:{run}:pending",
        "out": f"emit:run:{run}:out",
        "failed": f"emit:run:{run}:failed",
    }


def retry_option(node: str, value: Any) -> Retry | None:
    """A node's ``retry``: a count, ``(count, intervals)``, or an rq ``Retry``."""
    if value is None or isinstance(value, Retry):
        return value
    try:
        if isinstance(value, int):
            return Retry(max=value)
        count, intervals = value
        return Retry(max=count, interval=intervals)
    except (TypeError, ValueError) as exc:
        raise OptionError(
            f"node {node!r}: retry must be a count, (count, intervals) or rq.Retry, not {value!r} "
            f"({exc})"
        ) from None


def _find_locator(router: Router) -> str:
    for name, module in list(sys.modules.items()):
        for attr, value in list(vars(module).items()) if module else ():
            if value is router and not attr.startswith("_"):
                if name == "__main__":
                    continue
                return f"{name}:{attr}"
    raise GraphError(
        "cannot tell how an RQ worker would import this router: it is not a top-level name "
        "of any imported module other than __main__; define it in a module or pass locator="
    )
