"""RQRouter against a real Redis, with in-process RQ workers and real `emit` processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Callback, Queue, SimpleWorker, Worker

from emitcli import Router
from emitcli.errors import EmitError, GraphError, OptionError
from emitcli.inputs import Record
from emitcli.router import rq as rq_module
from emitcli.router.rq import FAILED_CALLBACK, JOB_FUNCTION, RQRouter, run_keys
from emitcli.router.rqbook import same_redis
from emitcli.rqrun import RQRun
from emitcli.throwaway import free_port
from emitcli.worker import listening
from tests.graphs import rq_graphs

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).with_name("emit"))
SPLIT = "tests.graphs.rq_graphs.split"


@pytest.fixture
def words(redis: Redis) -> RQRouter:
    rq_graphs.COUNTS.clear()
    rq_graphs.words.redis_connection = redis
    rq_graphs.words.locator = "tests.graphs.rq_graphs:words"
    return rq_graphs.words


def work(router: RQRouter, *queues: str) -> None:
    """Run every job on the queues in this process, until they are empty."""
    connection = router.redis_connection
    names = queues or ("default", "counting")
    objects = [Queue(q, connection=connection, serializer=router.serializer) for q in names]
    SimpleWorker(objects, connection=connection, serializer=router.serializer).work(burst=True)


def emit(*args: str, stdin: str = "", url: str | None = None) -> subprocess.CompletedProcess:
    """Run the ``emit`` command on ``stdin``, with ``url`` as EMIT_REDIS_URL; capture its output."""
    env = {**os.environ, "EMIT_REDIS_URL": url} if url else None
    return subprocess.run(
        [EMIT, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=90
    )


def run_lists(redis: Redis, run: str) -> tuple[int, list[dict], list[dict]]:
    keys = run_keys(run)
    out = [json.loads(v) for v in redis.lrange(keys["out"], 0, -1)]
    failed = [json.loads(v) for v in redis.lrange(keys["failed"], 0, -1)]
    return int(redis.get(keys["pending"]) or 0), out, failed


def test_a_tracked_run_counts_words_and_ends_with_nothing_pending(words, redis):
    documents = ["a b a c", "c c b", "d"]
    words.enqueue(SPLIT, [{"document": d} for d in documents], run="r1", track=True)
    work(words)

    pending, out, failed = run_lists(redis, "r1")
    expected = Counter(w for d in documents for w in d.split(" "))
    finals = {}
    for line in out:
        finals[line["word"]] = max(finals.get(line["word"], 0), line["count"])
    assert (pending, failed) == (0, [])
    assert finals == dict(expected)
    assert len(out) == sum(expected.values())


def test_messages_to_one_node_travel_in_batches_of_the_routers_size(words, redis):
    words.enqueue(SPLIT, [{"document": "a b c d e f g"}], run="r2", track=True)
    work(words, "default")

    jobs = Queue("counting", connection=redis, serializer=words.serializer).get_jobs()
    assert [len(job.args[0]["items"]) for job in jobs] == [3, 3, 1]


def test_a_node_that_raises_is_reported_with_its_message_and_the_rest_go_on(words, redis):
    words.enqueue(SPLIT, [{"document": "x boom y"}], run="r3", track=True)
    work(words)

    pending, out, failed = run_lists(redis, "r3")
    assert pending == 0
    assert [line["word"] for line in out] == ["x", "y"]
    assert [(f["node"], f["message"], f["error"]["type"]) for f in failed] == [
        ("tests.graphs.rq_graphs.tally", {"word": "boom"}, "ValueError")
    ]


def test_a_job_naming_something_that_is_not_a_node_is_refused_and_reported(words, redis):
    payload = {
        "graph": words.locator,
        "node": "os.system",
        "run": "r4",
        "track": True,
        "items": [[{"document": "a"}, "__entry_point", None, 0, None]],
    }
    redis.incr(run_keys("r4")["pending"])
    queue = Queue("default", connection=redis, serializer=words.serializer)
    queue.enqueue(JOB_FUNCTION, payload, on_failure=Callback(FAILED_CALLBACK))
    work(words)

    pending, out, failed = run_lists(redis, "r4")
    assert (pending, out) == (0, [])
    assert "not a node" in failed[0]["error"]["text"]


def test_msgpack_jobs_keep_integers_past_64_bits(redis):
    rq_graphs.big.redis_connection = redis
    rq_graphs.big.locator = "tests.graphs.rq_graphs:big"
    rq_graphs.big.enqueue("tests.graphs.rq_graphs.double", [{"n": 2**70}], run="r5", track=True)
    work(rq_graphs.big, "default")

    _, out, failed = run_lists(redis, "r5")
    assert failed == []
    assert out[0]["n"] == 2**71


def test_a_node_defined_in_main_is_refused_before_anything_is_enqueued(redis):
    router = RQRouter(redis)
    router.locator = "somewhere:router"

    def node(msg):
        return msg.x

    node.__module__ = "__main__"
    router.node(("x",), entry_point=True)(node)
    with pytest.raises(GraphError, match="__main__"):
        router(x=1)
    assert redis.keys("rq:job:*") == []


def test_unknown_and_malformed_rq_options_are_refused_at_registration():
    router = RQRouter()
    with pytest.raises(OptionError, match="queu"):
        router.node(("x",), queu="fast")(lambda msg: 1)
    with pytest.raises(OptionError, match="retry"):
        router.node(("x",), retry="often")(lambda msg: 1)
    with pytest.raises(OptionError, match=r"connection must be a redis\.Redis"):
        router.node(("x",), connection="redis://elsewhere")(lambda msg: 1)
    with pytest.raises(OptionError, match="queue"):
        Router().node(("x",), queue="fast")(lambda msg: 1)


def test_emit_run_on_rq_with_real_workers_gives_the_local_word_counts(redis_url, redis, tmp_path):
    lines = ["the rain in spain", "falls mainly on the plain", "", "the  end"]
    text = "\n".join(lines) + "\n"
    env = {**os.environ, "EMIT_REDIS_URL": redis_url}
    local = subprocess.run(
        [EMIT, "run", "examples.simple.graph:router", "--field", "document", "-q"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    workers = [
        subprocess.Popen(
            [EMIT, "worker", "examples.rq.graph:router", "-w", "simple", "-q"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        # Both in their loop, their signal handlers installed, before the run:
        # a worker interrupted while it starts exits 130, not 0.
        deadline = time.monotonic() + 60
        while sum(w.get_state() == "idle" for w in Worker.all(connection=redis)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        remote = subprocess.run(
            [
                EMIT,
                "run",
                "examples.rq.graph:router",
                "--backend",
                "rq",
                "--field",
                "document",
                "--timeout",
                "60",
                "-q",
            ],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=90,
        )
    finally:
        for worker in workers:
            worker.send_signal(2)
        codes = [worker.wait(timeout=30) for worker in workers]

    assert remote.returncode == 0, remote.stderr
    assert codes == [0, 0]

    def finals(stdout: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in stdout.splitlines():
            item = json.loads(line)
            counts[item["word"]] = max(counts.get(item["word"], 0), item["count"])
        return counts

    assert finals(remote.stdout) == finals(local.stdout)


WORD_COUNT = ("run", "examples.rq.graph:router", "--backend", "rq", "--field", "document")


def test_emit_run_on_rq_names_what_is_missing_when_no_worker_comes(redis_url, redis):
    result = emit(*WORD_COUNT, "--timeout", "1", stdin="a b\n", url=redis_url)
    assert result.returncode == 1
    assert "still pending" in result.stderr


def test_no_wait_only_enqueues_and_prints_the_run_id(redis_url, redis):
    result = emit(*WORD_COUNT, "--no-wait", stdin="a b\n", url=redis_url)
    run = result.stdout.strip()
    assert result.returncode == 0
    assert int(redis.get(run_keys(run)["pending"])) == 1


# A node with a connection of its own ------------------------------------------


@pytest.fixture
def far(redis: Redis, redis_url: str) -> Iterator[tuple[RQRouter, Redis]]:
    """The far graph: its router on db 0 of the test server, node far_measure on db 1."""
    other = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    other.flushdb()
    router = rq_graphs.far
    router.redis_connection = redis
    router.locator = "tests.graphs.rq_graphs:far"
    spec = router.nodes["tests.graphs.rq_graphs.far_measure"]
    placeholder = spec.options["connection"]
    spec.options["connection"] = other
    yield router, other
    spec.options["connection"] = placeholder
    other.flushdb()
    other.close()


def test_a_nodes_own_connection_gets_its_jobs_and_the_run_ends_on_the_routers(far, redis):
    router, other = far
    out = io.BytesIO()
    run = RQRun(router, out=out, report=lambda *failure: pytest.fail(str(failure)))
    run.submit([Record("-", 1, {"document": "a bb ccc"})], follow=False)
    work(router, "default")

    # near_split ran on db 0 and sent far_measure's job to db 1 only.
    assert Queue("far", connection=redis).count == 0
    assert Queue("far", connection=other, serializer=router.serializer).count == 1
    work_on(other, router, "far")
    work(router, "default")

    assert run.follow(timeout=10)
    lines = sorted(json.loads(line)["line"] for line in out.getvalue().splitlines())
    assert lines == ["a=1", "bb=2", "ccc=3"]
    # The run's bookkeeping stays with the router's Redis.
    assert other.keys("emit:*") == []
    assert redis.get(run_keys(run.run_id)["pending"]) == b"0"


def test_messages_a_nodes_own_redis_does_not_take_fail_and_the_run_still_ends(
    far, redis, monkeypatch
):
    router, _ = far
    spec = router.nodes["tests.graphs.rq_graphs.far_measure"]
    spec.options["connection"] = Redis(port=free_port(), socket_connect_timeout=0.2)
    # A job waits this long for a Redis to come back before giving up on it.
    monkeypatch.setattr(rq_module, "RECONNECT_FOR", 0.5)
    failures: list[tuple] = []
    run = RQRun(router, out=io.BytesIO(), report=lambda *failure: failures.append(failure[:3]))
    run.submit([Record("-", 1, {"document": "a bb"})], follow=False)
    work(router, "default")

    assert run.follow(timeout=10)
    assert [(where, node) for where, node, _ in failures] == [
        ("<stdin>:1", "tests.graphs.rq_graphs.far_measure")
    ] * 2
    assert "not sent: node 'tests.graphs.rq_graphs.far_measure' has its own Redis" in failures[0][2]
    assert redis.get(run_keys(run.run_id)["pending"]) == b"0"


def test_a_worker_listens_where_the_jobs_of_its_queues_go(far, redis):
    router, other = far

    assert listening(router, []) == (redis, ["default"])
    connection, queues = listening(router, ["far"])
    assert same_redis(connection, other) and queues == ["far"]
    with pytest.raises(EmitError, match="different Redis databases"):
        listening(router, ["default", "far"])


def work_on(connection: Redis, router: RQRouter, *queues: str) -> None:
    """Run every job on the queues of ``connection`` in this process, until they are empty."""
    objects = [Queue(q, connection=connection, serializer=router.serializer) for q in queues]
    SimpleWorker(objects, connection=connection, serializer=router.serializer).work(burst=True)


# emit run --no-wait, emit worker's log ----------------------------------------


def test_no_wait_exits_1_when_a_record_was_refused_while_enqueueing(redis_url, redis):
    lines = ['{"size": "3"}', '{"size": "4", "padding": "' + "x" * 2000 + '"}', "not json"]
    sizes = ("tests.graphs.rq_faults:sizes", "--backend", "rq", "--json", "--no-wait")
    result = emit("run", *sizes, "-u", redis_url, stdin="\n".join(lines) + "\n")

    run = result.stdout.strip()
    assert result.returncode == 1
    assert (
        "<stdin>:2: an input record for node 'tests.graphs.rq_faults.inflate' is 2025 bytes"
        in result.stderr
    )
    assert "<stdin>:3: " in result.stderr
    assert int(redis.get(run_keys(run)["pending"])) == 1


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "-q"])
def test_emit_worker_logs_a_node_that_raised_on_stderr_naming_the_node(quiet, words, redis_url):
    words.enqueue(SPLIT, [{"document": "boom"}])
    options = ("-b", "-w", "simple", *(["-q"] if quiet else []))
    result = emit("worker", "tests.graphs.rq_graphs:words", "-u", redis_url, *options)

    assert result.returncode == 0, result.stderr
    assert (
        "emit: ERROR emitcli.router.rqjobs: node 'tests.graphs.rq_graphs.tally' failed on"
        in result.stderr
    )
    assert "ValueError: boom is not a word" in result.stderr
