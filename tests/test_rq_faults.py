"""Faults on RQ: killed workers, a restarted Redis, retries, messages too big, failure records.

Kills and restarts happen to real processes: `emit worker`, `emit run` and
redis-server.  The rest runs jobs in this process with RQ's SimpleWorker.
Waiting is done by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import AbandonedJobError
from rq.registry import FailedJobRegistry

from emitcli.inputs import Record
from emitcli.router.rq import ERROR_TEXT_LIMIT, RUN_TTL, MessageTooBigError, RQRouter, run_keys
from emitcli.router.rqjobs import batch_failed
from emitcli.rqrun import RQRun
from tests.graphs import rq_faults

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).with_name("emit"))
GRAPHS = "tests.graphs.rq_faults"
NODES = "tests.graphs.rq_faults."
# Runs end by themselves, failed, if a fault keeps them waiting.
WAIT = ("--timeout", "30")


# Waiting -------------------------------------------------------------------


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"waited {timeout}s for {what}")


def says(path: Path, text: str) -> Callable[[], bool]:
    return lambda: text in path.read_text()


# Real processes --------------------------------------------------------------


def start_worker(graph: str, url: str, log: Path, *options: str) -> subprocess.Popen:
    """An `emit worker` whose log goes to a file, read while it runs."""
    with log.open("w") as err:
        # RQ logs to stdout, emit to stderr.
        return subprocess.Popen(
            [EMIT, "worker", f"{GRAPHS}:{graph}", "-u", url, *options],
            cwd=ROOT,
            stdout=err,
            stderr=subprocess.STDOUT,
        )


def start_run(graph: str, url: str, text: str, log: Path, *options: str) -> subprocess.Popen:
    """`emit run --backend rq` on ``text``; its stderr goes to a file, read while it runs."""
    given = log.with_suffix(".in")
    given.write_text(text)
    with given.open() as stdin, log.open("w") as err:
        return subprocess.Popen(
            [EMIT, "run", f"{GRAPHS}:{graph}", "--backend", "rq", "-u", url, "-f", "n", *options],
            cwd=ROOT,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def finish(run: subprocess.Popen, timeout: float = 40.0) -> tuple[int, list[dict]]:
    """Wait for a run; return its exit status and output lines."""
    out, _ = run.communicate(timeout=timeout)
    return run.returncode, [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; whatever still runs at its end is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def stalled_pid(redis: Redis) -> int:
    """The process a stalling node runs in, once it has said so."""
    found = redis.blpop([rq_faults.PIDS], timeout=20)
    assert found is not None, "no node stalled within 20s"
    return int(found[1])


def job_id(redis: Redis) -> str:
    """The id of the one job of the default queue that failed."""
    [found] = FailedJobRegistry("default", connection=redis).get_job_ids()
    return found


def the_pending_count(redis: Redis) -> int:
    [key] = redis.keys("emit:run:*:pending")
    return int(redis.get(key))


# A worker killed mid-job -------------------------------------------------------


def test_a_killed_workers_job_is_retried_and_the_run_ends_when_another_worker_takes_it(
    redis_url, redis, tmp_path, processes
):
    processes.append(start_worker("retried", redis_url, tmp_path / "w1.log", "-w", "simple"))
    processes.append(run := start_run("retried", redis_url, "7\n", tmp_path / "run.log", *WAIT))
    os.kill(stalled_pid(redis), signal.SIGKILL)

    queue = Queue("default", connection=redis)
    wait_for(lambda: queue.count == 1, "the dead worker's job back in its queue")
    processes.append(start_worker("retried", redis_url, tmp_path / "w2.log", "-w", "simple"))
    code, out = finish(run)

    assert code == 0, (tmp_path / "run.log").read_text()
    assert out == [{"n": "7", "@node": NODES + "stall_once"}]
    assert "worker died" in (tmp_path / "run.log").read_text()
    assert the_pending_count(redis) == 0


def test_a_killed_workers_job_without_retry_fails_and_each_message_is_reported(
    redis_url, redis, tmp_path, processes
):
    processes.append(start_worker("unretried", redis_url, tmp_path / "w.log", "-w", "simple"))
    processes.append(
        run := start_run("unretried", redis_url, "1\n2\n", tmp_path / "run.log", *WAIT)
    )
    os.kill(stalled_pid(redis), signal.SIGKILL)
    code, out = finish(run)

    log = (tmp_path / "run.log").read_text()
    assert (code, out) == (1, [])
    for line in ("<stdin>:1", "<stdin>:2"):
        assert f"{line}: node '{NODES}stall_always' worker died" in log
    assert "Registry" not in log  # RQ's own words for it stay out, without -v
    assert the_pending_count(redis) == 0
    assert FailedJobRegistry("default", connection=redis).count == 1


def test_a_killed_work_horse_fails_its_job_and_the_forking_worker_goes_on(
    redis_url, redis, tmp_path, processes
):
    processes.append(worker := start_worker("unretried", redis_url, tmp_path / "w.log"))
    processes.append(run := start_run("unretried", redis_url, "1\n", tmp_path / "run.log", *WAIT))
    horse = stalled_pid(redis)
    assert horse != worker.pid
    os.kill(horse, signal.SIGKILL)
    code, _ = finish(run)

    assert code == 1
    assert "worker died: Work-horse terminated unexpectedly" in (tmp_path / "run.log").read_text()
    assert the_pending_count(redis) == 0
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=20) == 0
    # The worker names the node and how its horse died, in emit's log.
    assert (
        f"emit: ERROR emitcli.router.rqjobs: job {job_id(redis)} for node "
        f"'{NODES}stall_always' failed: worker died: Work-horse terminated unexpectedly "
        f"(pid {horse}, killed by SIGKILL)"
    ) in (tmp_path / "w.log").read_text()


def test_a_run_that_times_out_names_the_queue_its_jobs_wait_in(redis_url, redis, tmp_path):
    code, _ = finish(
        start_run("retried", redis_url, "1\n", tmp_path / "run.log", "--timeout", "0.5")
    )

    assert code == 1
    assert (
        "1 job(s) still pending: 1 job(s) waiting in queue 'default'"
        in (tmp_path / "run.log").read_text()
    )


# Redis restarted mid-run --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of one test's own, which it can stop and start again on its port."""

    def __init__(self, folder: Path, persistent: bool) -> None:
        self.folder = folder
        self.persistent = persistent
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # Either nothing is kept on disk, or every write is, before it is acknowledged.
        keep = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)),
                *("--save", "", "--appendonly", "no", *keep),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with Redis.from_url(self.url) as client:
            wait_for(lambda: self._answers(client), f"redis-server on port {self.port}", 10)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)

    @staticmethod
    def _answers(client: Redis) -> bool:
        try:
            return bool(client.ping())
        except Exception:
            return False


@pytest.fixture
def redis_server(tmp_path) -> Iterator[Callable[[bool], RedisServer]]:
    """Starts a redis-server of the test's own; stops it at the end if it still runs."""
    servers: list[RedisServer] = []

    def start(persistent: bool) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", persistent)
        server.folder.mkdir()
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process and server.process.poll() is None:
            server.stop()


def test_a_worker_says_it_lost_redis_and_works_again_once_redis_is_back(
    redis_server, tmp_path, processes
):
    server = redis_server(False)
    log = tmp_path / "worker.log"
    processes.append(start_worker("echo", server.url, log, "-w", "simple"))
    wait_for(says(log, "Listening on"), "the worker to listen")

    server.stop()
    wait_for(says(log, "could not connect to Redis"), "the worker to say Redis is gone")
    server.start()
    run = start_run("echo", server.url, "0\n", tmp_path / "run.log", *WAIT)
    code, out = finish(run)

    assert code == 0, (tmp_path / "run.log").read_text()
    assert sorted(line["@node"] for line in out) == [NODES + "doze", NODES + "repeat"]


def dozing(redis: Redis) -> bool:
    """Whether the echo graph's dozing node has a job running."""
    return any(
        b"doze" in info for key in redis.keys("emit:run:*:running") for info in redis.hvals(key)
    )


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "without persistence"])
def test_a_run_whose_redis_restarts_mid_job_finishes_or_says_it_was_lost(
    persistent, redis_server, tmp_path, processes
):
    server = redis_server(persistent)
    worker_log, run_log = tmp_path / "worker.log", tmp_path / "run.log"
    processes.append(worker := start_worker("echo", server.url, worker_log, "-w", "simple"))
    processes.append(run := start_run("echo", server.url, "2\n", run_log, *WAIT))
    with Redis.from_url(server.url) as redis:
        wait_for(lambda: dozing(redis), "the dozing job to start")

    server.stop()
    wait_for(says(worker_log, "lost Redis while sending"), "the job to miss Redis")
    wait_for(says(run_log, "lost Redis"), "the run to miss Redis")
    server.start()
    code, out = finish(run)

    if persistent:
        assert code == 0, run_log.read_text()
        assert {line["@node"] for line in out} == {NODES + "doze", NODES + "repeat"}
    else:
        assert code == 1
        assert "Redis no longer knows run" in run_log.read_text()
    assert worker.poll() is None, "the worker quit"


# Retry --------------------------------------------------------------------------


@pytest.fixture
def flaky(redis: Redis) -> RQRouter:
    rq_faults.flaky.redis_connection = redis
    rq_faults.flaky.locator = f"{GRAPHS}:flaky"
    return rq_faults.flaky


def work(router: RQRouter) -> None:
    """Run every job of the default queue in this process, retries too, until it is empty."""
    queue = Queue("default", connection=router.redis_connection, serializer=router.serializer)
    worker = SimpleWorker([queue], connection=router.redis_connection, serializer=queue.serializer)
    worker.work(burst=True)


def run_lists(redis: Redis, run: str) -> tuple[int, list[dict], list[dict]]:
    keys = run_keys(run)
    out = [json.loads(v) for v in redis.lrange(keys["out"], 0, -1)]
    failed = [json.loads(v) for v in redis.lrange(keys["failed"], 0, -1)]
    return int(redis.get(keys["pending"]) or 0), out, failed


def attempts(redis: Redis, node: str) -> int:
    return int(redis.get(f"rq_faults:attempts:{node}") or 0)


def test_a_node_that_keeps_timing_out_is_tried_three_times_then_each_message_fails(flaky, redis):
    flaky.enqueue(NODES + "always_late", [{"n": 1}, {"n": 2}], run="late", track=True)
    work(flaky)

    pending, out, failed = run_lists(redis, "late")
    assert attempts(redis, "always_late") == 3
    assert (pending, out) == (0, [])
    assert [f["message"] for f in failed] == [{"n": 1}, {"n": 2}]
    assert all(f["error"]["text"].startswith("timed out") for f in failed)


def test_a_node_that_times_out_once_goes_through_on_its_retry(flaky, redis):
    flaky.enqueue(NODES + "late_once", [{"n": 1}], run="once", track=True)
    work(flaky)

    assert attempts(redis, "late_once") == 2
    assert run_lists(redis, "once") == (0, [{"n": 1, "@node": NODES + "late_once"}], [])


def test_an_exception_in_a_node_fails_its_message_only_and_is_not_retried(flaky, redis):
    flaky.enqueue(NODES + "raises_a_lot", [{"n": 1}], run="raises", track=True)
    work(flaky)

    pending, _, [failure] = run_lists(redis, "raises")
    assert (pending, attempts(redis, "raises_a_lot")) == (0, 1)
    assert failure["error"]["type"] == "ValueError"


def test_a_failed_jobs_end_is_counted_once_however_often_it_is_reported(flaky, redis):
    [job] = flaky.enqueue(NODES + "late_unretried", [{"n": 1}], run="once", track=True)
    work(flaky)
    # RQ's own cleanup may find the same job later, as abandoned.
    job.refresh()
    batch_failed(job, redis, AbandonedJobError, AbandonedJobError(), None)

    pending, _, failed = run_lists(redis, "once")
    assert (pending, len(failed)) == (0, 1)


def test_a_job_whose_end_was_booked_is_not_run_again(flaky, redis):
    [job] = flaky.enqueue(NODES + "late_once", [{"n": 1}], run="twice", track=True)
    redis.set("rq_faults:attempts:late_once", 1)
    work(flaky)
    # As when a worker dies after the job's sends and RQ hands the job out again.
    Queue("default", connection=redis, serializer=flaky.serializer).enqueue_job(job)
    work(flaky)

    assert attempts(redis, "late_once") == 2
    assert run_lists(redis, "twice") == (0, [{"n": 1, "@node": NODES + "late_once"}], [])


@pytest.mark.parametrize("how", ["emit worker --with-scheduler", "emit run --workers 1"])
def test_a_retry_that_waits_an_interval_runs_when_a_worker_has_the_scheduler(
    how, redis_url, redis, tmp_path, processes
):
    worker = None
    options: tuple[str, ...] = (*WAIT, "--workers", "1")
    if how == "emit worker --with-scheduler":
        log = tmp_path / "w.log"
        worker = start_worker("waiting", redis_url, log, "-w", "simple", "--with-scheduler")
        processes.append(worker)
        options = WAIT
    processes.append(run := start_run("waiting", redis_url, "7\n", tmp_path / "run.log", *options))
    code, out = finish(run)
    if worker is not None:
        # Stopped, not killed: a killed worker leaves its scheduler process
        # behind, which would schedule the next tests' retries.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0

    assert code == 0, (tmp_path / "run.log").read_text()
    assert out == [{"n": "7", "@node": NODES + "late_then_on_time"}]
    assert attempts(redis, "7") == 2


def test_without_a_scheduler_the_run_times_out_naming_the_retry_it_waits_for(
    redis_url, redis, tmp_path, processes
):
    processes.append(start_worker("waiting", redis_url, tmp_path / "w.log", "-w", "simple"))
    run = start_run("waiting", redis_url, "7\n", tmp_path / "run.log", "--timeout", "4")
    code, out = finish(run)

    log = (tmp_path / "run.log").read_text()
    assert (code, out) == (1, [])
    assert "timed out after 4s: run " in log
    assert "1 job(s) still pending: 1 job(s) in queue 'default' scheduled for a retry" in log
    assert attempts(redis, "7") == 1


# Failure records ----------------------------------------------------------------


def test_failure_records_keep_a_bounded_error_text(flaky, redis):
    flaky.enqueue(NODES + "raises_a_lot", [{"n": 1}], run="long", track=True)
    work(flaky)

    [failure] = run_lists(redis, "long")[2]
    text = failure["error"]["text"]
    assert text.startswith("raised ValueError: why: !!!")
    assert len(text) < ERROR_TEXT_LIMIT + 40
    assert text.endswith("... (8024 more characters)")


def test_failure_records_and_failed_jobs_expire(flaky, redis):
    [job] = flaky.enqueue(NODES + "late_unretried", [{"n": 1}], run="expiring", track=True)
    work(flaky)

    keys = run_keys("expiring")
    assert redis.llen(keys["failed"]) == 1
    for key in (keys["pending"], keys["failed"], job.key):
        assert 0 < redis.ttl(key) <= RUN_TTL


# Messages too big ---------------------------------------------------------------


@pytest.fixture
def sizes(redis: Redis) -> RQRouter:
    rq_faults.sizes.redis_connection = redis
    rq_faults.sizes.locator = f"{GRAPHS}:sizes"
    return rq_faults.sizes


def test_an_input_record_over_the_limit_is_refused_with_its_size_and_node(sizes, redis):
    reports: list[tuple] = []
    run = RQRun(sizes, out=(out := io.BytesIO()), report=lambda *r: reports.append(r[:3]))
    records = [
        Record("-", 1, {"size": "3"}),
        Record("-", 2, {"size": "4", "padding": "x" * 2000}),
        Record("-", 3, {"size": "5"}),
    ]
    run.submit(records, follow=False)
    work(sizes)

    assert run.follow(timeout=10)
    assert sorted(json.loads(line)["length"] for line in out.getvalue().splitlines()) == [3, 5]
    [(where, node, text)] = reports
    assert (where, node) == ("<stdin>:2", NODES + "inflate")
    assert "is 2025 bytes, over the limit of 1000 bytes" in text
    assert run.stats.failed == 1


def test_a_node_sending_a_message_over_the_limit_fails_that_message_only(sizes, redis):
    sizes.enqueue(NODES + "inflate", [{"size": s} for s in (10, 5000, 20)], run="big", track=True)
    work(sizes)

    pending, out, [failure] = run_lists(redis, "big")
    assert pending == 0
    assert sorted(line["length"] for line in out) == [10, 20]
    assert failure["message"] == {"size": 5000}
    assert failure["node"] == NODES + "inflate"
    assert f"sent a message to '{NODES}measure' that is 5011 bytes" in failure["error"]["text"]


def test_enqueueing_a_message_over_the_limit_raises_and_enqueues_nothing(sizes, redis):
    with pytest.raises(MessageTooBigError, match="over the limit of 1000 bytes") as caught:
        sizes.enqueue(NODES + "measure", [{"text": "short"}, {"text": "x" * 1000}])

    assert (caught.value.node, caught.value.size) == (NODES + "measure", 1011)
    assert redis.keys("rq:job:*") == []


def test_no_job_carries_more_message_bytes_than_the_limit(sizes, redis):
    jobs = sizes.enqueue(NODES + "measure", [{"text": "x" * 300}] * 10)

    assert [len(job.args[0]["items"]) for job in jobs] == [3, 3, 3, 1]
