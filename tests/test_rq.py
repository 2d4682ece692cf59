"""RQRouter against a real Redis, with in-process RQ workers and real `emit` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis
from rq import Callback, Queue, SimpleWorker

from emitcli import Router
from emitcli.errors import GraphError, OptionError
from emitcli.router.rq import FAILED_CALLBACK, JOB_FUNCTION, RQRouter, run_keys
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


def test_emit_run_on_rq_names_what_is_missing_when_no_worker_comes(redis_url, redis):
    env = {**os.environ, "EMIT_REDIS_URL": redis_url}
    result = subprocess.run(
        [
            EMIT,
            "run",
            "examples.rq.graph:router",
            "--backend",
            "rq",
            "--field",
            "document",
            "--timeout",
            "1",
        ],
        input="a b\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "still pending" in result.stderr


def test_no_wait_only_enqueues_and_prints_the_run_id(redis_url, redis):
    env = {**os.environ, "EMIT_REDIS_URL": redis_url}
    result = subprocess.run(
        [
            EMIT,
            "run",
            "examples.rq.graph:router",
            "--backend",
            "rq",
            "--field",
            "document",
            "--no-wait",
        ],
        input="a b\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    run = result.stdout.strip()
    assert result.returncode == 0
    assert int(redis.get(run_keys(run)["pending"])) == 1
