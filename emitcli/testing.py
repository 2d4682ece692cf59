"""Helpers for testing a graph: run it over a list of inputs, look at what came out.

::

    from emitcli.testing import run_graph

    def test_counts_words():
        result = run_graph(router, ["the rain in spain"], field="document")
        assert result.fields("count_word")[0] == {"word": "the", "count": 1}
        assert not result.failures

:func:`run_graph` runs exactly what ``emit run`` runs, in this process, and
keeps the output, every hop's :class:`~emitcli.trace.HopEvent` and every
failure, instead of printing them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .inputs import Record
from .patterns import Pattern
from .router.core import Router
from .runner import NODE_KEY, Failure, Runner
from .trace import HopEvent


@dataclass
class GraphRun:
    """What one :func:`run_graph` produced."""

    #: Each output line as ``emit run`` prints it: the fields plus ``"@node"``.
    outputs: list[dict[str, Any]] = field(default_factory=list)
    #: Every hop, in the order hops ended.
    events: list[HopEvent] = field(default_factory=list)
    #: Every failed hop or input, as ``emit run`` reports them.
    failures: list[Failure] = field(default_factory=list)

    def fields(self, node: str) -> list[dict[str, Any]]:
        """The fields of each output of the nodes ``node`` matches (a pattern)."""
        pattern = Pattern(node, "GraphRun.fields")
        return [
            {k: v for k, v in out.items() if k != NODE_KEY}
            for out in self.outputs
            if pattern.matches(out[NODE_KEY])
        ]

    def hops(self, node: str) -> list[HopEvent]:
        """The events of the hops to the nodes ``node`` matches (a pattern)."""
        pattern = Pattern(node, "GraphRun.hops")
        return [event for event in self.events if pattern.matches(event.node)]


def run_graph(
    router: Router,
    inputs: Iterable[Mapping[str, Any] | str],
    *,
    field: str = "line",
    outputs: Iterable[str] = (),
) -> GraphRun:
    """Run ``router`` over ``inputs`` in this process and keep what happened.

    Each input is a dict of fields, or a string put in ``field`` (as
    ``emit run`` does with a raw line).  ``outputs`` chooses the nodes whose
    messages are kept, as ``--output`` does; by default, the sinks.  Failures
    are kept, not raised.
    """
    result = GraphRun()
    out = io.BytesIO()
    runner = Runner(
        router,
        out=out,
        outputs=list(outputs),
        report=result.failures.append,
        on_event=result.events.append,
    )
    records = (
        Record("<test>", number, {field: item} if isinstance(item, str) else dict(item))
        for number, item in enumerate(inputs, 1)
    )
    runner.run(records)
    result.outputs = [json.loads(line) for line in out.getvalue().splitlines()]
    return result
