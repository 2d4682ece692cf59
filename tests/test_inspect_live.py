"""``emit inspect -u``: the graph's RQ queues as a real Redis holds them, and their workers.

Jobs are put in each state by real RQ workers (in this process, burst mode)
or by RQ's own enqueueing; ``emit inspect`` runs as a real process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from subprocess import Popen

import pytest
from redis import Redis
from rq import Queue, SimpleWorker, Worker

from emitcli.router.rq import RQRouter
from emitcli.throwaway import free_port
from emitcli.worker import URL_VARIABLES
from tests.graphs import live_graphs

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).parent / "emit")
SHOP = "tests.graphs.live_graphs:shop"
NODE = "tests.graphs.live_graphs."
NO_URL_ENV = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
TIMEOUT = 60
ZERO = dict.fromkeys(["queued", "started", "failed", "finished", "deferred", "scheduled"], 0)


def inspect(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EMIT, "inspect", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**NO_URL_ENV, **(env or {})},
        timeout=TIMEOUT,
    )


def with_password(url: str) -> str:
    """``url`` with a user and password; the test Redis lets the default user in with any."""
    return url.replace("redis://", "redis://default:s3cret@")


@pytest.fixture
def shop(redis: Redis) -> RQRouter:
    live_graphs.shop.redis_connection = redis
    live_graphs.shop.locator = SHOP
    return live_graphs.shop


def work(router: RQRouter, queue: str) -> None:
    """Run the jobs on ``queue`` in this process until it is empty."""
    connection = router.redis_connection
    queues = [Queue(queue, connection=connection, serializer=router.serializer)]
    SimpleWorker(queues, connection=connection, serializer=router.serializer).work(burst=True)


@pytest.fixture
def busy_shop(shop: RQRouter, redis: Redis) -> Iterator[RQRouter]:
    """Jobs in every state, counts that differ, and two idle workers registered."""
    for order in ("fast", "quick", "late"):
        shop(order=order)
    work(shop, "orders")  # 3 finished, each sends one job to shipping
    work(shop, "shipping")  # late times out and fails; the others send to pack
    waiting = [shop(order=order)[0] for order in ("a", "b", "c", "d")]
    shipping = Queue("shipping", connection=redis, serializer=shop.serializer)
    shipping.enqueue_call(NODE + "ship", depends_on=waiting[0])
    for hours in (1, 2):
        shipping.enqueue_in(timedelta(hours=hours), NODE + "ship")

    workers = [
        Worker([Queue(q, connection=redis) for q in queues], connection=redis, name=name)
        for name, queues in (("packer-2", ["shipping", "default"]), ("packer-1", ["default"]))
    ]
    for worker in workers:
        worker.register_birth()
        worker.set_state("idle")
    yield shop
    for worker in workers:
        worker.register_death()


def idle(name: str) -> dict[str, object]:
    return {
        "name": name,
        "state": "idle",
        "current_job": None,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
    }


def snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    return {key: redis.dump(key) for key in sorted(redis.keys())}


def test_the_json_counts_each_queues_jobs_by_state_and_lists_its_workers(
    busy_shop, redis, redis_url
):
    before = snapshot(redis)

    result = inspect(SHOP, "--json", "-u", with_password(redis_url))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report)[-1] == "live"
    assert report["live"] == {
        "url": with_password(redis_url).replace("s3cret", "***"),
        "queues": {
            "orders": {**ZERO, "queued": 4, "finished": 3, "workers": []},
            "shipping": {
                **ZERO,
                "failed": 1,
                "finished": 2,
                "deferred": 1,
                "scheduled": 2,
                "workers": [idle("packer-2")],
            },
            "default": {**ZERO, "queued": 2, "workers": [idle("packer-1"), idle("packer-2")]},
        },
    }
    assert list(report["live"]["queues"]["shipping"]) == [*ZERO, "workers"]
    assert "s3cret" not in result.stdout + result.stderr
    # Looking changes nothing, not even what RQ's own counting would clean up.
    assert snapshot(redis) == before


def test_the_page_lists_each_queue_with_its_counts_and_workers(busy_shop, redis_url):
    result = inspect(SHOP, "-u", with_password(redis_url))

    assert result.returncode == 0, result.stderr
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    page = result.stdout.split("\n\n")
    assert page[-1].splitlines() == [
        f"live on {with_password(redis_url).replace('s3cret', '***')}: 3 queues",
        "- queue orders: 4 queued, 0 started, 0 failed, 3 finished, 0 deferred, 0 scheduled;"
        " no worker listens",
        "- queue shipping: 0 queued, 0 started, 1 failed, 2 finished, 1 deferred, 2 scheduled",
        f"  - worker packer-2: idle, {where}",
        "- queue default: 2 queued, 0 started, 0 failed, 0 finished, 0 deferred, 0 scheduled",
        f"  - worker packer-1: idle, {where}",
        f"  - worker packer-2: idle, {where}",
    ]
    assert page[-2] == "no problems found"


def test_a_finished_job_past_its_time_is_not_counted_and_is_left_for_rq_to_clean_up(
    shop, redis, redis_url
):
    shop(order="kept")
    (expired,) = shop(order="expired")
    work(shop, "orders")
    finished = Queue("orders", connection=redis).finished_job_registry
    finished.add(expired, ttl=0)  # as if its result_ttl ran out before a worker's cleanup

    report = json.loads(inspect(SHOP, "--json", "-u", redis_url).stdout)

    assert report["live"]["queues"]["orders"]["finished"] == 1
    assert finished.get_job_count(cleanup=False) == 2


@pytest.fixture
def start_pack_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[[], Popen[bytes]]]:
    """Starts a real ``emit worker`` in burst mode on pack's queue; kills it if left running."""
    started: list[Popen[bytes]] = []

    def start() -> Popen[bytes]:
        command = [EMIT, "worker", SHOP, "default", "-u", redis_url, "-w", "simple", "--burst"]
        with open(tmp_path / "worker.log", "wb") as log:
            process = Popen([*command, "--name", "packer-live"], cwd=ROOT, stdout=log, stderr=log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_worker_with_a_job_in_hand_is_busy_on_that_job_which_counts_as_started(
    shop, redis, redis_url, start_pack_worker
):
    (job,) = shop.enqueue(NODE + "pack", [{"order": "hold"}])
    worker = start_pack_worker()
    assert redis.blpop([live_graphs.HOLDING], timeout=TIMEOUT), "pack never started"

    report = json.loads(inspect(SHOP, "--json", "-u", redis_url).stdout)

    redis.rpush(live_graphs.RELEASE, "1")
    assert worker.wait(timeout=TIMEOUT) == 0
    default = report["live"]["queues"]["default"]
    assert {**default, "workers": []} == {**ZERO, "started": 1, "workers": []}
    assert default["workers"] == [
        {
            "name": "packer-live",
            "state": "busy",
            "current_job": job.id,
            "pid": worker.pid,
            "hostname": socket.gethostname(),
        }
    ]


def test_a_local_graph_shows_the_default_queue(redis, redis_url):
    report = json.loads(
        inspect("tests.graphs.inspect_graphs:clean", "--json", "-u", redis_url).stdout
    )

    assert report["live"] == {
        "url": redis_url,
        "queues": {"default": {**ZERO, "workers": []}},
    }


@pytest.mark.parametrize("variable", URL_VARIABLES)
def test_each_url_variable_stands_in_for_u(variable, redis, redis_url):
    report = json.loads(inspect(SHOP, "--json", env={variable: redis_url}).stdout)

    assert report["live"]["url"] == redis_url
    assert list(report["live"]["queues"]) == ["orders", "shipping", "default"]


def test_without_a_url_there_is_no_live_section(redis):
    document = inspect(SHOP, "--json")
    page = inspect(SHOP)

    assert "live" not in json.loads(document.stdout)
    assert page.stdout.endswith("\n\nno problems found\n")


@pytest.mark.parametrize("form", [["--json"], []], ids=["json", "page"])
def test_a_redis_that_cannot_be_reached_is_one_line_naming_the_masked_url_and_exits_2(form):
    url = f"redis://default:s3cret@127.0.0.1:{free_port()}/0"

    result = inspect(SHOP, "-u", url, *form)

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    masked = url.replace("s3cret", "***")
    assert line.startswith(f"emit: cannot reach Redis at {masked}: ")
    assert "s3cret" not in result.stderr


def test_a_url_that_is_not_a_redis_url_exits_2_naming_it():
    result = inspect(SHOP, "-u", "http://user:s3cret@example.com/")

    assert result.returncode == 2
    assert result.stderr.startswith("emit: not a Redis URL: http://user:***@example.com/ (")
    assert "s3cret" not in result.stderr
