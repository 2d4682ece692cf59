"""CeleryRouter with a real Celery worker against the test suite's Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from emitcli.errors import OptionError
from emitcli.router.celery import CeleryRouter

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCUMENT = "the rain in spain falls mainly on the plain the end"

KICKOFF = """
import json
from examples.celery import tasks
from examples.celery.app import router
results = router(document={document!r})
print(json.dumps(results[0].get(timeout=60)))
"""


@pytest.fixture
def celery_worker(redis_url, redis):
    env = {**os.environ, "EMIT_CELERY_BROKER": redis_url}
    worker = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "examples.celery.app",
            "worker",
            "-P",
            "solo",
            "-c",
            "1",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield env
    worker.terminate()
    worker.wait(timeout=30)


def test_the_celery_example_counts_every_word_through_a_real_worker(celery_worker, redis):
    kickoff = subprocess.run(
        [sys.executable, "-c", KICKOFF.format(document=DOCUMENT)],
        cwd=ROOT,
        env=celery_worker,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert kickoff.returncode == 0, kickoff.stderr
    words = DOCUMENT.split(" ")
    assert json.loads(kickoff.stdout) == [{"word": w} for w in words]

    deadline = time.monotonic() + 60
    while sum(int(s) for _, s in redis.zrange("celery_emit_example", 0, -1, withscores=True)) < len(
        words
    ):
        assert time.monotonic() < deadline, "the tally tasks did not all run"
        time.sleep(0.05)
    counts = {
        k.decode(): int(v) for k, v in redis.zrange("celery_emit_example", 0, -1, withscores=True)
    }
    assert counts == dict(Counter(words))


def test_celery_nodes_are_tasks_named_after_the_nodes_with_their_own_decorator():
    from celery import Celery

    app = Celery("emit_names", broker="memory://")
    router = CeleryRouter(celery_task=app.task)

    @router.node(("word",), entry_point=True)
    def split(msg):
        yield from msg.line.split()

    @router.node(("n",), "split", celery_task=app.task(rate_limit="5/s"))
    def measure(msg):
        return len(msg.word)

    assert split.node_name.endswith("<locals>.split")
    assert (split.task.name, measure.task.name) == (split.node_name, measure.node_name)
    assert app.tasks[measure.node_name].rate_limit == "5/s"
    assert measure.task.rate_limit == "5/s"


def test_a_celery_router_refuses_options_it_does_not_know():
    from celery import Celery

    router = CeleryRouter(celery_task=Celery("emit_opts", broker="memory://").task)
    with pytest.raises(OptionError, match="queue"):
        router.node(("x",), queue="fast")(lambda msg: 1)
