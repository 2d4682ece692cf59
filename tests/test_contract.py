"""The graph contract (DESIGN.md, "Graph semantics"), run alike on every backend.

Each test runs records through a graph as ``emit run`` does, in this process
(:class:`~emitcli.runner.Runner`) or on RQ (:class:`~emitcli.rqrun.RQRun`,
real Redis, an in-process simple worker in burst mode), and states what comes
out: the output lines, order aside unless the contract fixes it, and the
failures, each with its input line, node and error type.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis import Redis
from rq import Queue, SimpleWorker

from emitcli.inputs import STDIN, Record
from emitcli.router.rq import RQRouter
from emitcli.rqrun import RQRun
from emitcli.runner import Failure, Runner
from emitcli.worker import graph_queues
from tests.graphs import contract_graphs

GRAPHS = "tests.graphs.contract_graphs"


@dataclass
class Outcome:
    """What a run gave: output lines in the order printed, failures as
    ``(where, node, error type, text)`` in the order reported."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str | None, str, str]] = field(default_factory=list)

    def outputs(self) -> list[dict[str, Any]]:
        """The output lines, order aside."""
        return unordered(self.lines)

    def failed(self) -> list[tuple[str, str | None, str]]:
        """Where, node and error type of each failure, order aside."""
        return sorted((where, node, kind) for where, node, kind, _text in self.failures)


Run = Callable[[str, list[dict[str, Any]]], Outcome]


def unordered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output lines in one order whatever order they came in."""
    return sorted(lines, key=lambda line: json.dumps(line, sort_keys=True))


def records(inputs: list[dict[str, Any]]) -> list[Record]:
    return [Record(STDIN, line, fields) for line, fields in enumerate(inputs, 1)]


def run_locally(case: str, inputs: list[dict[str, Any]]) -> Outcome:
    outcome = Outcome()

    def report(failure: Failure) -> None:
        kind = type(failure.error).__name__
        outcome.failures.append((failure.record.where, failure.node, kind, failure.reason))

    out = io.BytesIO()
    Runner(getattr(contract_graphs, f"{case}_local"), out=out, report=report).run(records(inputs))
    outcome.lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return outcome


def run_on_rq(redis: Redis, case: str, inputs: list[dict[str, Any]]) -> Outcome:
    router: RQRouter = getattr(contract_graphs, f"{case}_rq")
    router.redis_connection = redis
    router.locator = f"{GRAPHS}:{case}_rq"
    outcome = Outcome()

    def report(where: str, node: str | None, text: str, record: dict[str, Any]) -> None:
        outcome.failures.append((where, node, record["error"]["type"], text))

    out = io.BytesIO()
    run = RQRun(router, out=out, report=report)
    run.submit(records(inputs), follow=False)
    queues = [
        Queue(name, connection=redis, serializer=router.serializer) for name in graph_queues(router)
    ]
    SimpleWorker(queues, connection=redis, serializer=router.serializer).work(burst=True)
    assert run.follow(timeout=10), run.missing()
    outcome.lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return outcome


CASES = {
    "shapes": [{"kind": kind} for kind in contract_graphs.RESULTS],
    "generators": [{"n": 3, "fail_at": -1}, {"n": 4, "fail_at": 1}],
    "fan_out": [{"x": 1}, {"x": 2}],
    "cycle": [{"n": 0}],
    "values": [{"n": 0, "x": "inf", "y": 1}, {"n": 2**80, "x": 3, "y": 4}],
}


@pytest.mark.parametrize("case", CASES)
def test_both_backends_send_the_same_lines_and_report_the_same_failures(case, redis):
    local = run_locally(case, CASES[case])
    remote = run_on_rq(redis, case, CASES[case])

    assert remote.outputs() == local.outputs()
    assert sorted(remote.failures) == sorted(local.failures)
    assert local.lines or local.failures


@pytest.fixture(params=["local", "rq"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Runs a case's graph on the backend of the test's parameter."""
    if request.param == "local":
        yield run_locally
        return
    redis = request.getfixturevalue("redis")
    yield lambda case, inputs: run_on_rq(redis, case, inputs)


# Results ---------------------------------------------------------------------


def test_results_are_zipped_taken_as_the_message_or_fill_one_field_and_none_sends_nothing(run):
    kinds = ["tuple", "dict", "none", "noresult"]
    outcome = run("shapes", [{"kind": kind} for kind in kinds])

    assert outcome.outputs() == unordered(
        [
            {"a": 1, "b": "x", "@node": "contract.shape"},
            {"a": 2, "b": "y", "@node": "contract.shape"},
            *({"value": {"kind": kind}, "@node": "contract.one_field"} for kind in kinds),
        ]
    )
    assert outcome.failures == []


def test_a_result_that_does_not_fit_the_fields_is_an_error_naming_node_and_fields(run):
    outcome = run("shapes", [{"kind": "short tuple"}, {"kind": "list"}])

    assert outcome.failed() == [
        ("<stdin>:1", "contract.shape", "ResultError"),
        ("<stdin>:2", "contract.shape", "ResultError"),
    ]
    short, listed = (text for *_, text in outcome.failures)
    assert "node 'contract.shape' (fields ('a', 'b')) returned a tuple of 1 value(s)" in short
    assert "returned list [1, 'x']" in listed
    # The one-field node took both records all the same.
    assert len(outcome.lines) == 2


# Generators --------------------------------------------------------------------


def test_a_generators_items_go_on_in_the_order_yielded(run):
    outcome = run("generators", [{"n": 4, "fail_at": -1}])

    assert outcome.lines == [{"text": f"item {i}", "@node": "contract.label"} for i in range(4)]
    assert outcome.failures == []


def test_a_generator_failing_part_way_keeps_what_it_yielded_before(run):
    outcome = run("generators", [{"n": 5, "fail_at": 2}])

    assert outcome.outputs() == [
        {"text": "item 0", "@node": "contract.label"},
        {"text": "item 1", "@node": "contract.label"},
    ]
    assert outcome.failed() == [("<stdin>:1", "contract.count", "RuntimeError")]
    assert outcome.failures[0][3] == "raised RuntimeError: stopped at 2"


# Fan-out -----------------------------------------------------------------------


def test_each_subscriber_gets_its_own_copy_of_a_message(run):
    outcome = run("fan_out", [{"x": 1}])

    assert outcome.outputs() == unordered(
        [{"length": 3, "@node": "contract.append"}, {"length": 2, "@node": "contract.measure"}]
    )


# The hop limit -------------------------------------------------------------------


def test_a_cycle_is_dropped_at_the_hop_limit_with_an_error_showing_it(run):
    outcome = run("cycle", [{"n": 0}])

    assert outcome.lines == []
    [(where, node, kind, text)] = outcome.failures
    assert (where, kind) == ("<stdin>:1", "HopLimitError")
    assert node in ("contract.ping", "contract.pong")
    assert (
        f"passed the hop limit of {contract_graphs.MAX_HOPS} "
        f"(cycle contract.ping -> contract.pong -> contract.ping)"
    ) in text


# Values ------------------------------------------------------------------------


def test_a_node_that_raises_fails_its_record_only_and_the_rest_go_on(run):
    outcome = run("values", [{"n": 5, "x": 1, "y": 2}, {"n": 0, "x": 1, "y": 4}])

    assert outcome.failed() == [("<stdin>:2", "contract.divide", "ZeroDivisionError")]
    assert outcome.failures[0][3] == "raised ZeroDivisionError: integer division or modulo by zero"
    assert outcome.outputs() == unordered(
        [
            {"quotient": 2, "@node": "contract.divide"},
            {"n": 10, "@node": "contract.double"},
            {"n": 0, "@node": "contract.double"},
            {"ratio": 0.5, "@node": "contract.ratio"},
            {"ratio": 0.25, "@node": "contract.ratio"},
        ]
    )


def test_integers_keep_every_digit(run):
    outcome = run("values", [{"n": 2**70 + 1, "x": 1, "y": 1}])

    doubled = [line["n"] for line in outcome.lines if line["@node"] == "contract.double"]
    assert doubled == [2**71 + 2]


def test_nan_and_infinity_are_refused_naming_node_and_field(run):
    outcome = run("values", [{"n": 1, "x": "nan", "y": 1}, {"n": 1, "x": 1, "y": "0.0"}])

    assert outcome.failed() == [
        ("<stdin>:1", "contract.ratio", "ValueTypeError"),
        ("<stdin>:2", "contract.ratio", "ZeroDivisionError"),
    ]
    nan_text = outcome.failures[0][3]
    assert "node 'contract.ratio' (fields ('ratio',)) field 'ratio': nan is not a JSON number" in (
        nan_text
    )
    assert all(line["@node"] != "contract.ratio" for line in outcome.lines)
