"""Starting a run for ``emit run`` and ``emit replay``, on either backend.

:func:`start` takes the records and the options both commands share, checks
that they fit the backend, opens the files they name (dead letters, the
record), attaches the displays (progress, ``--trace``), claims stdout for
the output lines, handles signals, and returns the exit code.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import typer
from redis.exceptions import RedisError

from . import throwaway
from .console import TraceView, make_console, progress, report_failure, say, summary
from .errors import EmitError
from .inputs import STDIN, Record
from .inspection import unreachable
from .router.core import Router
from .router.rq import RQRouter
from .rqrun import RQRun
from .runner import Failure, Runner, format_traceback
from .trace import HopEvent, RecordWriter
from .worker import connect, redis_url, unheard_queues

#: Exit codes, as DESIGN.md fixes them.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: After a signal, 128 plus its number, as shells report it: 130 for Ctrl-C, 143 for SIGTERM.
EXIT_SIGNALLED = 128


class Backend(StrEnum):
    local = "local"
    rq = "rq"


@dataclass
class RunOptions:
    """What ``emit run`` and ``emit replay`` take for a run."""

    backend: Backend = Backend.local
    output: list[str] = field(default_factory=list)
    dead_letter: Path | None = None
    fail_fast: bool = False
    trace: bool = False
    record: Path | None = None
    url: str | None = None
    timeout: float | None = None
    no_wait: bool = False
    workers: int | None = None
    app_dir: Path | None = None
    quiet: bool = False
    verbose: int = 0


def usage_error(text: str) -> None:
    """Say what is wrong with the command line, and exit 2."""
    say(make_console(), text, "red")
    raise typer.Exit(EXIT_USAGE)


def start(
    router: Router,
    locator: str,
    records: Iterator[Record],
    options: RunOptions,
    console: Any,
    *,
    inputs: Iterable[str] = (),
) -> int:
    """Run ``records`` through the graph as the options say; return the exit code.

    ``inputs`` names the files the records are read from (``-`` for stdin), so
    that a file written by the run is never one it reads.
    """
    _check_files_apart(inputs, options)
    if options.backend is Backend.local:
        rq_only = {
            "--workers": options.workers,
            "--timeout": options.timeout is not None,
            "--no-wait": options.no_wait,
            "-u/--url": options.url,
        }
        for option, given in rq_only.items():
            if given:
                usage_error(f"{option} is for RQ runs; it works with --backend rq")
        return _run_local(router, locator, records, options, console)
    if options.output or options.fail_fast or options.dead_letter:
        usage_error("--output, --fail-fast and --dead-letter work with --backend local only")
    if options.no_wait and (options.trace or options.record):
        usage_error("--trace and --record follow the run: with --no-wait, nothing is followed")
    if options.workers:
        if options.no_wait:
            usage_error("--workers stop when the run ends: with --no-wait, nothing would run")
        return _run_rq_own_workers(router, locator, records, options, console)
    return _run_rq(router, locator, records, options, console)


def _check_files_apart(inputs: Iterable[str], options: RunOptions) -> None:
    """Refuse a run that would write into a file it reads, or two outputs into one file.

    Appending dead letters to the file being replayed would feed the run its
    own failures for ever, and ``--record`` truncates its file before a line
    of it is read.
    """
    named = [("--dead-letter", options.dead_letter), ("--record", options.record)]
    written = [(option, path) for option, path in named if path is not None]
    for number, (option, path) in enumerate(written):
        here = _identity(str(path))
        if here is None:
            continue
        for source in inputs:
            if here == _identity(source):
                shown = "stdin" if source == STDIN else repr(source)
                usage_error(
                    f"{option} {str(path)!r} is also read as input ({shown}): name another file"
                )
        for other, other_path in written[number + 1 :]:
            if here == _identity(str(other_path)):
                usage_error(f"{option} and {other} name one file {str(path)!r}: give each its own")


def _identity(path: str) -> tuple[Any, ...] | None:
    """What tells one file from another: device and inode (stdin's for ``-``), or the
    resolved path of a file not made yet; ``None`` for a device (/dev/null, a terminal)."""
    try:
        status = os.fstat(0) if path == STDIN else os.stat(path)
    except OSError:
        return None if path == STDIN else ("new", os.path.realpath(path))
    # A pipe counts: ``--record /dev/stdin`` would write into the input it reads.
    if stat.S_ISREG(status.st_mode) or stat.S_ISFIFO(status.st_mode):
        return (status.st_dev, status.st_ino)
    return None


class _Listeners:
    """The files and displays a run's hop events go to: ``--trace``, ``--record``."""

    def __init__(self, files: ExitStack, options: RunOptions, console: Any, by_record: bool):
        self.view = TraceView(console, by_record=by_record) if options.trace else None
        self.recorder = None
        if options.record:
            stream = files.enter_context(_open_for(options.record, "record", "wb"))
            self.recorder = RecordWriter(stream)

    def handler(self) -> Callable[[HopEvent], None] | None:
        """One function for every event, or ``None`` when no one listens."""
        listeners = [x.hop for x in (self.view, self.recorder) if x is not None]
        if not listeners:
            return None
        if len(listeners) == 1:
            return listeners[0]

        def each(event: HopEvent) -> None:
            for listener in listeners:
                listener(event)

        return each

    def bad_input(self, failure: dict[str, Any]) -> None:
        """Keep an input line that could not be read (a dead-letter record) in the record."""
        if self.recorder is not None:
            self.recorder.write({**failure, "kind": "bad-input"})


def _run_local(
    router: Router, locator: str, records: Iterator[Record], options: RunOptions, console: Any
) -> int:
    """Run in this process with the files and displays the options ask for."""
    with ExitStack() as files:
        letters = None
        if options.dead_letter:
            letters = files.enter_context(_open_for(options.dead_letter, "dead-letter", "a"))
        listeners = _Listeners(files, options, console, by_record=False)
        view = listeners.view

        def report(failure: Failure) -> None:
            error = failure.error
            shown = format_traceback(error) if options.verbose and error else None
            report_failure(console, failure, shown)
            if failure.node is None and failure.record.fields is None:
                listeners.bad_input(failure.as_record(runner.run_id))

        out = files.enter_context(_claim_stdout())
        try:
            runner = Runner(
                router,
                out=out,
                outputs=options.output,
                report=report,
                dead_letter=letters,
                fail_fast=options.fail_fast,
                on_event=listeners.handler(),
                on_record_end=view.record_end if view is not None else None,
            )
        except EmitError as exc:
            usage_error(str(exc))
        if listeners.recorder is not None:
            listeners.recorder.start(runner.run_id, locator, "local")
        return _run(runner, records, console, options.quiet, view)


def _open_for(path: Path, what: str, mode: str) -> IO[Any]:
    """Open a file an option names; a usage error (exit 2) if it cannot be."""
    try:
        if "b" in mode:
            return open(path, mode)
        return open(path, mode, encoding="utf-8")
    except OSError as exc:
        usage_error(f"cannot write the {what} file {str(path)!r}: {exc.strerror}")
        raise


def _run_rq_own_workers(
    router: Router, locator: str, records: Iterator[Record], options: RunOptions, console: Any
) -> int:
    """``_run_rq`` on N workers started for the run, and on a Redis of their own unless
    one is named; all stopped when it ends."""
    url = redis_url(options.url)
    assert options.workers
    if not isinstance(router, RQRouter):
        # Checked before a server and workers start only to say the same.
        usage_error(f"the graph's router is a {type(router).__name__}; RQ needs an RQRouter")
    try:
        with (
            _sigterm_interrupts(),
            throwaway.redis_server() if url is None else nullcontext(url) as used,
            throwaway.workers(
                locator, used, options.workers, app_dir=options.app_dir, verbose=options.verbose
            ),
        ):
            return _run_rq(router, locator, records, options, console, url=used, own_workers=True)
    except throwaway.StartError as exc:
        say(console, str(exc), "red")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # while the server or the workers start or stop
        signum = _signal_of(exc)
        say(console, f"interrupted by {signum.name}")
        return EXIT_SIGNALLED + signum


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def _signal_of(exc: KeyboardInterrupt) -> signal.Signals:
    return signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM interrupts as Ctrl-C does, so that what the run started is stopped too;
    the exit status still tells the two apart (143, 130)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise _Terminated

    saved = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def _run_rq(
    router: Router,
    locator: str,
    records: Iterator[Record],
    options: RunOptions,
    console: Any,
    *,
    url: str | None = None,
    own_workers: bool = False,
) -> int:
    """Enqueue the records on RQ and, unless --no-wait, follow the run to its end."""
    try:
        connection = connect(router, redis_url(url or options.url))
        assert isinstance(router, RQRouter)
        # Workers import the graph the way this command did.
        router.locator = locator
        connection.ping()
    except EmitError as exc:
        usage_error(str(exc))
    except RedisError as exc:
        say(console, unreachable(connection, exc), "red")
        return EXIT_FAILED

    def report(where: str, node: str | None, text: str, record: dict[str, Any]) -> None:
        # Errors of emit's own (too big, the hop limit) name the node already.
        named = node is None or repr(node) in text
        say(console, f"{where}: {text}" if named else f"{where}: node {node!r} {text}", "red")
        if record.get("kind") == "dead-letter":
            listeners.bad_input(record)

    with ExitStack() as files:
        listeners = _Listeners(files, options, console, by_record=True)
        out = files.enter_context(_claim_stdout())
        on_event = listeners.handler()
        run = RQRun(router, out=out, report=report, on_event=on_event)  # type: ignore[arg-type]
        if listeners.recorder is not None:
            listeners.recorder.start(run.run_id, locator, "rq")
        shown = not options.quiet and not options.no_wait
        try:
            with (
                _sigterm_interrupts(),
                progress(console, run.stats, enabled=shown, above=listeners.view),
            ):
                if not (own_workers or options.no_wait):
                    _warn_unheard(router, locator, console)
                run.submit(records, follow=not options.no_wait)
                if options.no_wait:
                    out.write(run.run_id.encode() + b"\n")
                    # A record refused while enqueuing (bad input, too big) is a failure.
                    return EXIT_FAILED if run.stats.failed else EXIT_OK
                finished = run.follow(options.timeout)
        except KeyboardInterrupt as exc:
            signum = _signal_of(exc)
            goes_on = "stopped with its workers" if own_workers else "goes on in the workers"
            say(console, f"interrupted by {signum.name}; run {run.run_id} {goes_on}")
            return EXIT_SIGNALLED + signum
        except RedisError as exc:
            say(console, f"lost Redis: {exc}", "red")
            return EXIT_FAILED
        if listeners.view is not None:
            listeners.view.finish()
    stats = run.stats
    if not finished:
        try:
            missing = run.missing()
        except RedisError as exc:
            missing = f"cannot tell what is missing: lost Redis ({exc})"
        say(console, f"timed out after {options.timeout:g}s: run {run.run_id}: {missing}", "red")
        return EXIT_FAILED
    if not options.quiet and not run.closed:
        say(console, summary(stats))
    return EXIT_FAILED if stats.failed else EXIT_OK


def _warn_unheard(router: Router, locator: str, console: Any) -> None:
    """Say so when no worker listens on a queue of the run: it would wait for one, silently."""
    assert isinstance(router, RQRouter)
    unheard = unheard_queues(router)
    if unheard:
        names = ", ".join(repr(name) for name in unheard)
        say(
            console,
            f"no worker listens on queue {names} yet; the run waits for one "
            f"(start it with: emit worker {locator} -u URL)",
            "yellow",
        )


def _run(
    runner: Runner,
    records: Iterator[Record],
    console: Any,
    quiet: bool,
    view: TraceView | None = None,
) -> int:
    """Run with signals handled; return the exit code."""
    watched = _Interrupts(runner)
    with watched, progress(console, runner.stats, enabled=not quiet, above=view):
        try:
            runner.run(watched.reading(records))
        except KeyboardInterrupt:
            runner.interrupted = True
        except SystemExit as exc:
            # A node called sys.exit(): the run stops, but never silently.
            where = runner.abandon(f"a node called sys.exit({exc.code!r})")
            say(console, f"stopped: a node called sys.exit({exc.code!r}) at {where}", "red")
            return EXIT_FAILED
    stats = runner.stats
    if view is not None:
        view.finish()
    if runner.write_error is not None:
        say(console, f"stopped: cannot write the output: {runner.write_error}", "red")
        return EXIT_FAILED
    if runner.closed:
        return EXIT_FAILED if stats.failed else EXIT_OK
    if runner.interrupted:
        stopped = f"interrupted by {watched.signum.name}"
        if runner.record_in_flight():
            # Ctrl-C prints one line (DESIGN.md): the record left unfinished is
            # named in it and kept in the dead-letter file, not reported apart.
            stopped += f" at {runner.abandon(stopped)}"
        say(console, summary(stats, stopped=stopped))
        return EXIT_SIGNALLED + watched.signum
    if not quiet:
        early = "stopped at the first failure (--fail-fast)" if runner.failed_fast else None
        say(console, summary(stats, stopped=early))
    return EXIT_FAILED if stats.failed else EXIT_OK


class _Interrupts:
    """Ctrl-C and SIGTERM: the first stops the run at a whole line, a second at once.

    While the run waits for input, nothing is in flight, so the signal raises
    KeyboardInterrupt there and then; while a record is being processed it only
    sets a flag, which the runner checks after each output line and each record.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.signum = signal.SIGINT
        self.waiting = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signal.Signals(signum)
        if self.waiting or self.runner.interrupted:
            raise KeyboardInterrupt
        self.runner.interrupted = True

    def reading(self, records: Iterator[Record]) -> Iterator[Record]:
        """Pass records through, marking the time spent waiting for them."""
        iterator = iter(records)
        while True:
            self.waiting = True
            try:
                record = next(iterator)
            except StopIteration:
                return
            finally:
                self.waiting = False
            yield record


@contextmanager
def _claim_stdout() -> Iterator[IO[bytes]]:
    """Keep stdout for JSON lines only; what nodes print goes to stderr.

    At the descriptor level, so child processes and C extensions that write to
    fd 1 cannot corrupt the output either.  Writes go straight to the saved
    descriptor, one call per line, so nothing is left in a buffer to fail at
    exit when the reader (``head``) has gone.
    """
    if sys.stdout is None:
        # Started with descriptor 1 closed: the first line fails and stops the
        # run.  Not descriptor 1 itself, which a file opened since may now hold.
        yield _FdWriter(-1)  # type: ignore[misc]
        return
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0:  # an in-memory stdout, as under a test runner
        saved = sys.stdout
        out = sys.stdout.buffer
        sys.stdout = sys.stderr
        try:
            yield out
        finally:
            sys.stdout = saved
        return

    sys.stdout.flush()
    out_fd = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield _FdWriter(out_fd)  # type: ignore[misc]
    finally:
        sys.stdout = saved
        os.dup2(out_fd, fd) if _alive(out_fd) else None
        os.close(out_fd)


class _FdWriter:
    """The smallest binary writer: whole writes to one descriptor, no buffer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        written = os.write(self.fd, data)
        if written < len(data):  # a partial write: a big line into a full pipe
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass


def _alive(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
