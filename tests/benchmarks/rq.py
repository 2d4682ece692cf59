"""Benchmark: the word-count graph on RQ workers against stock RQ, one job per message.

    python -m tests.benchmarks.rq [--documents N] [--stock-documents N]
                                  [--classes simple,forking] [--workers 1,2]

(Run it as a module: started as a file, its folder would come first on
sys.path and this ``rq.py`` would hide the rq package.)

Both sides do the same work on the same documents of 100 words: split each
document on spaces, then count each word in a Redis sorted set with ZINCRBY,
as examples/rq does.  emit runs that example's graph with ``emit run
--backend rq`` on ``emit worker`` processes, the time of the whole command
included.  Stock RQ enqueues one job per document, whose function enqueues
one job per word, on ``rq worker`` processes.  A message is one call of a
node (or job function): documents plus words on both sides.  Both use the
same RQ worker class, one or two workers, started before the clock, on a
throw-away redis-server of the benchmark's own.  This is not a test: it
prints messages/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Queue, Worker, get_current_job

# A stock forking worker imports this module again in each job's process,
# as it would a user's tasks module: it imports no more than rq needs, and
# the benchmark's own tools only where they are used.

ROOT = Path(__file__).resolve().parents[2]
WORDS_PER_DOCUMENT = 100
EXAMPLE_KEY = "emit_rq_example"
STOCK_KEY = "stock_rq_example"
STOCK_CLASSES = {"simple": "rq.worker.SimpleWorker", "forking": "rq.worker.Worker"}


# Stock RQ, one job per message -------------------------------------------------


def stock_split(document: str) -> None:
    """One job per document: one job per word, enqueued in one pipeline."""
    job = get_current_job()
    assert job is not None
    queue = Queue("stock-words", connection=job.connection)
    words = document.strip().split(" ")
    queue.enqueue_many([Queue.prepare_data(stock_tally, (word,)) for word in words])


def stock_tally(word: str) -> tuple[str, int]:
    job = get_current_job()
    assert job is not None
    return word, int(job.connection.zincrby(STOCK_KEY, 1, word))


def run_stock(url: str, docs: list[str]) -> float:
    """Seconds from the first enqueue to the last word counted."""
    connection = Redis.from_url(url)
    queue = Queue("stock-documents", connection=connection)
    total = len(docs) * WORDS_PER_DOCUMENT
    started = time.perf_counter()
    split = f"{__name__.replace('__main__', 'tests.benchmarks.rq')}.stock_split"
    queue.enqueue_many([Queue.prepare_data(split, (doc,)) for doc in docs])
    while counted(connection, STOCK_KEY) < total:
        time.sleep(0.01)
    return time.perf_counter() - started


def counted(connection: Redis, key: str) -> int:
    scores = connection.zrange(key, 0, -1, withscores=True)
    return int(sum(score for _word, score in scores))


# emit on RQ ------------------------------------------------------------------


def run_emit(url: str, docs: list[str]) -> float:
    """Seconds the whole ``emit run --backend rq`` takes, its start included."""
    text = "\n".join(docs) + "\n"
    command = [str(Path(sys.executable).with_name("emit")), "run", "examples.rq.graph:router"]
    command += ["--backend", "rq", "--field", "document", "-u", url, "-q"]
    started = time.perf_counter()
    subprocess.run(
        command, input=text.encode(), stdout=subprocess.DEVNULL, cwd=ROOT, check=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    counts = counted(Redis.from_url(url), EXAMPLE_KEY)
    if counts != len(docs) * WORDS_PER_DOCUMENT:
        raise SystemExit(f"emit counted {counts:,} words, not {len(docs) * WORDS_PER_DOCUMENT:,}")
    return elapsed


# Workers ---------------------------------------------------------------------


def start_workers(url: str, side: str, worker_class: str, count: int) -> list:
    from emitcli.throwaway import spawn

    if side == "emit":
        command = [sys.executable, "-m", "emitcli", "worker", "examples.rq.graph:router"]
        command += ["-u", url, "-w", worker_class, "-q"]
    else:
        command = [str(Path(sys.executable).with_name("rq")), "worker", "-u", url, "-q"]
        command += ["-w", STOCK_CLASSES[worker_class], "stock-documents", "stock-words"]
    environment = {**os.environ, "EMIT_REDIS_URL": url}
    processes = [
        spawn(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL) for _ in range(count)
    ]
    connection = Redis.from_url(url)
    deadline = time.monotonic() + 60
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{side} workers did not start")
        time.sleep(0.05)
    return processes


def measure(url: str, side: str, worker_class: str, count: int, docs: list[str]) -> float:
    """Messages per second of one side, on ``count`` fresh workers and an empty Redis."""
    from emitcli.throwaway import stop

    Redis.from_url(url).flushdb()
    workers = start_workers(url, side, worker_class, count)
    try:
        seconds = run_emit(url, docs) if side == "emit" else run_stock(url, docs)
    finally:
        stop(workers)
    return len(docs) * (1 + WORDS_PER_DOCUMENT) / seconds


def main() -> None:
    from emitcli.throwaway import redis_server
    from tests.benchmarks.local import documents

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000, help="for emit [1000]")
    parser.add_argument("--stock-documents", type=int, default=10, help="for stock RQ [10]")
    parser.add_argument("--classes", default="simple,forking", help="[simple,forking]")
    parser.add_argument("--workers", default="1,2", help="worker counts [1,2]")
    args = parser.parse_args()

    emit_docs = documents(args.documents * WORDS_PER_DOCUMENT)
    stock_docs = documents(args.stock_documents * WORDS_PER_DOCUMENT)
    print(f"messages: emit {len(emit_docs) * 101:,}, stock RQ {len(stock_docs) * 101:,}")
    print(f"{'class':8} {'workers':>7} {'emit msg/s':>12} {'stock msg/s':>12} {'ratio':>7}")
    with redis_server() as url:
        for worker_class in args.classes.split(","):
            for count in map(int, args.workers.split(",")):
                emit = measure(url, "emit", worker_class, count, emit_docs)
                stock = measure(url, "stock", worker_class, count, stock_docs)
                ratio = emit / stock
                print(f"{worker_class:8} {count:>7} {emit:>12,.0f} {stock:>12,.0f} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
