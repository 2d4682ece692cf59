"""``--trace``, ``--record`` and ``emit replay`` on RQ, with real workers and pipes.

The workers are those ``emit run --workers N`` starts on the suite's Redis; they
inherit the environment, where ``EMIT_TEST_BAD_WORD`` plants the bug.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from emitcli.codec import JSONSerializer

ROOT = Path(__file__).resolve().parents[1]
RQ_WORDS = "tests.graphs.trace_graphs:rq_words"
WORDS = "tests.graphs.trace_graphs:words"
EMIT = [sys.executable, "-m", "emitcli"]
TEXT = "the bad rain\nin spain bad\n\nfalls mainly\n"


def emit(*args, stdin="", fixed=False, env=None):
    environment = {**os.environ, "COLUMNS": "120", **(env or {})}
    environment.pop("EMIT_TEST_BAD_WORD", None)
    if fixed:
        environment["EMIT_TEST_BAD_WORD"] = ""
    return subprocess.run(
        [*EMIT, *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
        env=environment, timeout=120,
    )  # fmt: skip


def on_rq(redis_url, workers=2):
    return ["--backend", "rq", "-u", redis_url, "--workers", str(workers)]


def hops(path):
    """The hop lines of a record file, without what differs between runs."""
    kept = []
    for line in Path(path).read_text().splitlines():
        obj = json.loads(line)
        if obj["kind"] == "hop":
            error = (obj.get("error") or {}).get("type")
            fields = json.dumps(obj["fields"], sort_keys=True)
            kept.append((obj["node"], fields, obj["outcome"], obj["sent"], obj["line"], error))
    return Counter(kept)


def test_an_rq_record_holds_the_hops_a_local_record_holds(tmp_path, redis, redis_url):
    local, remote = tmp_path / "local.jsonl", tmp_path / "rq.jsonl"
    plain = emit("run", WORDS, "--record", str(local), stdin=TEXT)
    spread = emit("run", RQ_WORDS, *on_rq(redis_url), "--record", str(remote), stdin=TEXT)

    assert plain.returncode == spread.returncode == 1, spread.stderr
    assert hops(remote) == hops(local)
    assert sum(hops(remote).values()) == 18
    first = json.loads(remote.read_text().splitlines()[0])
    assert (first["kind"], first["backend"], first["graph"]) == ("run", "rq", RQ_WORDS)


def test_every_rq_hop_names_the_hop_that_sent_its_message(tmp_path, redis, redis_url):
    record = tmp_path / "rq.jsonl"
    emit("run", RQ_WORDS, *on_rq(redis_url), "--record", str(record), stdin=TEXT)
    events = [json.loads(line) for line in record.read_text().splitlines()[1:]]
    by_hop = {event["hop"]: event for event in events}

    assert len(by_hop) == len(events)
    for event in events:
        if event["origin"] == "__entry_point":
            assert event["parent"] is None
        else:
            assert by_hop[event["parent"]]["node"] == event["origin"]
            assert by_hop[event["parent"]]["line"] == event["line"]


def test_trace_on_rq_draws_a_tree_per_record_with_its_failure(redis, redis_url):
    result = emit("run", RQ_WORDS, *on_rq(redis_url), "--trace", stdin=TEXT)

    assert result.returncode == 1
    err = result.stderr
    for line in (1, 2, 3, 4):
        assert f"<stdin>:{line}\n" in err
    # Each failure once as a report line, once in its record's tree.
    assert err.count("count' raised ValueError: cannot count 'bad'") == 2
    assert err.count('count {"word":"bad"}') == 2
    assert err.count("ValueError: cannot count 'bad'") == 4
    assert "tests.graphs.trace_graphs.shout" in err
    assert "\x1b[" not in err


def test_a_long_traced_rq_run_ends_with_a_table_per_node(redis, redis_url):
    text = "".join(f"word{i} and more\n" for i in range(30))
    result = emit("run", RQ_WORDS, *on_rq(redis_url), "--trace", "-q", stdin=text)

    assert result.returncode == 0, result.stderr
    assert "hops per node" in result.stderr
    counts = [line.split() for line in result.stderr.splitlines() if "trace_graphs." in line]
    assert {row[0]: int(row[1]) for row in counts} == {
        "tests.graphs.trace_graphs.split": 30,
        "tests.graphs.trace_graphs.count": 90,
        "tests.graphs.trace_graphs.shout": 90,
    }


def test_fix_and_replay_on_rq_gives_exactly_the_missing_outputs(tmp_path, redis, redis_url):
    """The issue's story on RQ: a real file, a failing node, the trace, a fix, the replay."""
    text = tmp_path / "doc.txt"
    text.write_text("".join(f"line {i} has a bad word\n" for i in range(40)))
    record = tmp_path / "rec.jsonl"
    first = subprocess.run(
        f"cat {text} | {' '.join(EMIT)} run {RQ_WORDS} {' '.join(on_rq(redis_url))} "
        f"--trace --record {record}",
        shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "EMIT_TEST_BAD_WORD"},
    )  # fmt: skip
    assert first.returncode == 1
    assert "<stdin>:7: node 'tests.graphs.trace_graphs.count' raised ValueError" in first.stderr

    again = emit("replay", str(record), RQ_WORDS, "--failed", *on_rq(redis_url, 1), fixed=True)
    full = emit("run", WORDS, str(text), fixed=True)
    missing = Counter(full.stdout.splitlines()) - Counter(first.stdout.splitlines())
    assert again.returncode == 0, again.stderr
    assert Counter(again.stdout.splitlines()) == missing
    assert sum(missing.values()) == 40


def test_a_batch_that_failed_as_a_whole_is_recorded_as_failed_hops(tmp_path, redis, redis_url):
    record = tmp_path / "rec.jsonl"
    graph = "tests.graphs.trace_graphs:rq_late"
    first = emit("run", graph, *on_rq(redis_url, 1), "--json", "--record", str(record),
                 stdin='{"n": 1}\n')  # fmt: skip
    assert first.returncode == 1
    assert "timed out" in first.stderr
    [hop] = [json.loads(line) for line in record.read_text().splitlines()[1:]]
    assert (hop["node"], hop["fields"], hop["outcome"]) == (
        "tests.graphs.trace_graphs.late", {"n": 1}, "error")  # fmt: skip

    again = emit("replay", str(record), graph, "--failed", *on_rq(redis_url, 1),
                 env={"EMIT_TEST_LATE": ""})  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout == '{"n":1,"@node":"tests.graphs.trace_graphs.late"}\n'


@pytest.mark.parametrize("option", ["--trace", "--record=x.jsonl"])
def test_trace_and_record_need_a_run_that_is_followed(option, redis_url):
    result = emit("run", RQ_WORDS, "--backend", "rq", "-u", redis_url, "--no-wait", option)
    assert result.returncode == 2
    assert "with --no-wait, nothing is followed" in result.stderr


def test_replay_failed_with_only_a_url_requeues_the_graphs_failed_jobs(redis, redis_url):
    graph = "tests.graphs.trace_graphs:rq_late"
    first = emit("run", graph, "--backend", "rq", "-u", redis_url, "--json", "--no-wait",
                 stdin='{"n": 1}\n{"n": 2}\n')  # fmt: skip
    assert first.returncode == 0, first.stderr
    burst = [*EMIT, "worker", graph, "-u", redis_url, "-w", "simple", "--burst", "-q"]
    subprocess.run(burst, cwd=ROOT, timeout=120, check=True, capture_output=True)
    failed = FailedJobRegistry("default", connection=redis, serializer=JSONSerializer)
    assert failed.count == 1  # one batch of two messages, past its timeout

    again = emit("replay", "--failed", "-u", redis_url, graph)
    assert again.returncode == 0, again.stderr
    assert "queue 'default': 1 failed job requeued" in again.stderr
    assert failed.count == 0
    subprocess.run(burst, cwd=ROOT, timeout=120, check=True, capture_output=True,
                   env={**os.environ, "EMIT_TEST_LATE": ""})  # fmt: skip
    finished = FinishedJobRegistry("default", connection=redis, serializer=JSONSerializer)
    assert (failed.count, finished.count) == (0, 1)

    nothing = emit("replay", "--failed", "-u", redis_url, graph)
    assert "no failed jobs of this graph to requeue" in nothing.stderr


def test_replay_without_a_file_needs_an_explicit_url(redis_url):
    graph = "tests.graphs.trace_graphs:rq_late"
    result = emit("replay", "--failed", graph, env={"EMIT_REDIS_URL": redis_url})
    assert result.returncode == 2
    assert "only --failed -u URL LOCATOR works without one" in result.stderr
