"""The ``emit`` command: a thin Typer layer over the library objects."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from redis.exceptions import RedisError
from typer.completion import completion_init, get_completion_script

from . import __version__, throwaway
from .console import make_console, say
from .digraph import RankDir, RenderError, drawing, to_dot
from .errors import EmitError, LoadError
from .inputs import STDIN, read_records
from .inspection import unreachable
from .launch import (
    EXIT_FAILED,
    EXIT_OK,
    Backend,
    RunOptions,
    start,
    usage_error,
)
from .loader import load_router
from .replay import Selection, replay_records, requeue_failed
from .router.core import Router
from .router.rq import RQRouter
from .runner import format_traceback, select_nodes
from .worker import GraphPool, connect, make_worker, redis_url

app = typer.Typer(
    name="emit",
    help="Run a graph of Python functions over streams: in this process, or on RQ workers.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

Locator = Annotated[
    str,
    typer.Argument(
        help="Where the Router is: module:attr, module.attr or path/to/file.py:attr.",
        metavar="LOCATOR",
        show_default=False,
    ),
]
AppDir = Annotated[
    Path | None,
    typer.Option(
        "--app-dir",
        metavar="DIR",
        help="Import the graph from this directory (before the current one).",
    ),
]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No progress line and no summary.")]
Verbose = Annotated[
    int,
    typer.Option(
        "-v", "--verbose", count=True, help="Show tracebacks; twice, emit's debug log too."
    ),
]


RedisURL = Annotated[
    str | None,
    typer.Option(
        "-u",
        "--url",
        metavar="URL",
        help="Redis URL (else EMIT_REDIS_URL, RQ_REDIS_URL, REDIS_URL, or the router's own).",
        show_default=False,
    ),
]
Trace = Annotated[
    bool,
    typer.Option(
        "--trace",
        help="Show every hop on stderr: a tree per record for the first 20 records, "
        "then a table per node.",
    ),
]
RecordFile = Annotated[
    Path | None,
    typer.Option(
        "--record",
        metavar="FILE",
        help="Write every hop (node, fields, time, outcome) as a JSON line to this file, "
        "for emit replay and emit inspect.",
        show_default=False,
    ),
]


class WorkerClass(StrEnum):
    forking = "forking"
    simple = "simple"
    spawn = "spawn"


Output = Annotated[
    list[str] | None,
    typer.Option(
        "--output",
        metavar="NODE",
        help="Print what this node sends (repeatable; patterns as in subscriptions). "
        "Default: the sinks, nodes no other node subscribes to.",
        show_default=False,
    ),
]

DeadLetter = Annotated[
    Path | None,
    typer.Option(
        "--dead-letter",
        metavar="FILE",
        help="Append each failed record, with its error, as a JSON line to this file.",
        show_default=False,
    ),
]

FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")]

BackendOption = Annotated[
    Backend, typer.Option("--backend", help="Run in this process, or on RQ workers.")
]

Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="With --backend rq: give up after this many seconds, naming what is missing.",
        show_default=False,
    ),
]

Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        metavar="N",
        min=1,
        help="With --backend rq: start N workers for the run, and a throw-away Redis "
        "unless -u or a URL variable names one; stop them when the run ends.",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"emit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run a graph of Python functions over streams: in this process, or on RQ workers."""


@app.command()
def run(
    locator: Locator,
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Input files; '-' or none reads stdin.", metavar="FILE", show_default=False
        ),
    ] = None,
    field: Annotated[
        str | None,
        typer.Option(
            "--field",
            "-f",
            metavar="NAME",
            help="Field that holds each raw line (default: line).",
            show_default=False,
        ),
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Read JSON lines: each object's keys are the fields.")
    ] = False,
    output: Output = None,
    dead_letter: DeadLetter = None,
    fail_fast: FailFast = False,
    backend: BackendOption = Backend.local,
    url: RedisURL = None,
    timeout: Timeout = None,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="With --backend rq: only enqueue, and print the run id."),
    ] = False,
    workers: Workers = None,
    trace: Trace = False,
    record: RecordFile = None,
    app_dir: AppDir = None,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Send each input line through the graph; print what its sinks send as JSON lines.

    Output goes to stdout, one compact JSON object per line: the message's fields
    plus "@node", the node that sent it.  Progress, errors, a summary and whatever
    the nodes print go to stderr.  Exit status: 0 all handled, 1 some record or
    node failed, 2 usage or graph error, 130 interrupted (143 by SIGTERM).
    """
    console = make_console()
    _setup_logging(verbose, rq=True)
    router = _load(locator, app_dir, verbose)
    sources = files or [STDIN]
    for source in sources:
        # Devices, pipes and process substitution (/dev/fd/63) are read like files.
        if source != STDIN and not os.path.exists(source):
            usage_error(f"no input file {source!r}")
        if source != STDIN and os.path.isdir(source):
            usage_error(f"input {source!r} is a directory")
    if field is not None and json_lines:
        usage_error("--field names the field of a raw line; with --json the keys are the fields")
    field = field or "line"
    if not field.isidentifier():
        usage_error(f"--field {field!r} is not a valid field name")
    records = read_records(sources, json_lines=json_lines, field=field)
    options = RunOptions(
        backend, output or [], dead_letter, fail_fast, trace, record,
        url, timeout, no_wait, workers, app_dir, quiet, verbose,
    )  # fmt: skip
    raise typer.Exit(start(router, locator, records, options, console, inputs=sources))


def _load(locator: str, app_dir: Path | None, verbose: int) -> Router:
    try:
        # stdout is for the command's output only: what the user's modules
        # print while they load goes to stderr, as what nodes print does.
        with contextlib.redirect_stdout(sys.stderr):
            return load_router(locator, app_dir)
    except LoadError as exc:
        if verbose and exc.__cause__ is not None:
            print(format_traceback(exc.__cause__), file=sys.stderr)
        usage_error(str(exc))
    raise AssertionError("unreachable")


class _StderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is at that moment.

    One instance serves every run in a process: running the command again (as
    tests do) must neither stack handlers nor write to an earlier run's stderr.
    """

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


_log_handler = _StderrHandler()
_log_handler.setFormatter(logging.Formatter("emit: %(levelname)s %(name)s: %(message)s"))


def _setup_logging(verbose: int, *, rq: bool = False) -> None:
    logger = logging.getLogger("emitcli")
    logger.addHandler(_log_handler)  # a no-op when this process ran the command before
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    if rq:
        # A run that follows RQ jobs reports what RQ's own warnings say (a job
        # whose worker died, failed by a registry's cleanup) in its own words;
        # RQ's reach stderr with -v only, instead of through logging's last resort.
        rq_logger = logging.getLogger("rq")
        keep, drop = (_log_handler, _no_log) if verbose else (_no_log, _log_handler)
        rq_logger.removeHandler(drop)
        rq_logger.addHandler(keep)


_no_log = logging.NullHandler()


WorkerQuiet = Annotated[
    bool, typer.Option("-q", "--quiet", help="Log only warnings and errors (RQ's and emit's).")
]
WorkerVerbose = Annotated[
    int, typer.Option("-v", "--verbose", count=True, help="Log debug messages too.")
]


@app.command()
def worker(
    locator: Locator,
    queues: Annotated[
        list[str] | None,
        typer.Argument(
            help="Queues to listen on; default every queue the graph uses on the router's "
            "Redis (give the queues of nodes with a connection of their own to listen there).",
            metavar="QUEUE",
            show_default=False,
        ),
    ] = None,
    url: RedisURL = None,
    burst: Annotated[
        bool, typer.Option("-b", "--burst", help="Quit when the queues are empty.")
    ] = False,
    worker_class: Annotated[
        WorkerClass,
        typer.Option("-w", "--worker-class", help="forking (a process per job), simple, or spawn."),
    ] = WorkerClass.forking,
    max_jobs: Annotated[
        int | None,
        typer.Option(
            "--max-jobs", metavar="N", help="Quit after this many jobs.", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="The worker's name; with -n, their names' prefix.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "-n",
            "--workers",
            metavar="N",
            min=1,
            help="Run a pool of N workers, restarted when they quit unless --burst.",
        ),
    ] = 1,
    with_scheduler: Annotated[
        bool,
        typer.Option(
            "--with-scheduler",
            help="Also run RQ's scheduler, which puts jobs whose retry waits an interval "
            "back on their queue; without one somewhere, such retries never run.",
        ),
    ] = False,
    app_dir: AppDir = None,
    quiet: WorkerQuiet = False,
    verbose: WorkerVerbose = 0,
) -> None:
    """Run an RQ worker with the graph loaded once; it runs the graph's jobs only.

    Ctrl-C or SIGTERM: finish the job in hand and exit 0; a second one, a
    second or more later, stops at once (the job is then failed, or retried
    if its node has retries left; never lost).  With -n, the same for each.
    """
    # emit's log (a node that raised, a dead work horse) at the level of RQ's.
    _setup_logging(0 if quiet else verbose + 1)
    throwaway.watch_parent()
    router = _load(locator, app_dir, verbose)
    level = "WARNING" if quiet else "DEBUG" if verbose else "INFO"
    try:
        connect(router, redis_url(url)).ping()
        assert isinstance(router, RQRouter)
        if workers > 1:
            pool = GraphPool(
                router,
                locator,
                queues or [],
                workers=workers,
                worker_class=worker_class.value,
                name=name,
                max_jobs=max_jobs,
                with_scheduler=with_scheduler,
            )
            pool.connection.ping()
            pool.start(burst=burst, logging_level=level)
            return
        rq_worker = make_worker(
            router, locator, queues or [], worker_class=worker_class.value, name=name
        )
        rq_worker.connection.ping()
    except EmitError as exc:
        usage_error(str(exc))
    except RedisError as exc:
        say(make_console(), unreachable(getattr(router, "redis_connection", None), exc), "red")
        raise typer.Exit(EXIT_FAILED) from None
    rq_worker.work(
        burst=burst, max_jobs=max_jobs, logging_level=level, with_scheduler=with_scheduler
    )


# emit inspect ----------------------------------------------------------------


@app.command()
def replay(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="The record or dead-letter file ('-': stdin), then the graph's locator. "
            "With --failed and -u and no file: requeue the graph's failed RQ jobs.",
            metavar="[FILE] LOCATOR",
            show_default=False,
        ),
    ],
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            metavar="NODE",
            help="Send the messages that reached this node (repeatable; patterns as in "
            "subscriptions) to that node again.",
            show_default=False,
        ),
    ] = None,
    failed: Annotated[
        bool,
        typer.Option("--failed", help="Send only the messages whose hop failed, to that node."),
    ] = False,
    output: Output = None,
    dead_letter: DeadLetter = None,
    fail_fast: FailFast = False,
    backend: BackendOption = Backend.local,
    url: RedisURL = None,
    timeout: Timeout = None,
    workers: Workers = None,
    trace: Trace = False,
    record: RecordFile = None,
    app_dir: AppDir = None,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Send recorded messages through the graph again, after a fix.

    FILE is a record (emit run --record) or a dead-letter file (--dead-letter).
    By default each original input record goes to the entry points again;
    --failed sends each message whose hop failed to the node where it failed;
    --node sends each message that reached the node to that node.  Output,
    summary and exit status are those of emit run.
    """
    console = make_console()
    _setup_logging(verbose, rq=True)
    if len(paths) > 2:
        usage_error("emit replay takes a FILE and a LOCATOR")
    if len(paths) == 1:
        # Without a file, -u (or --backend rq with a URL variable) names the
        # failed jobs to requeue; a URL variable alone must not.
        if not (failed and (url or (backend is Backend.rq and redis_url(None)))):
            usage_error(
                "emit replay needs a record or dead-letter FILE before the LOCATOR "
                "(only --failed -u URL LOCATOR works without one: it requeues failed RQ jobs)"
            )
        router = _load(paths[0], app_dir, verbose)
        raise typer.Exit(_requeue_failed(router, url, console))
    source, locator = paths
    if failed and node:
        usage_error("--failed and --node choose differently; give one of them")
    router = _load(locator, app_dir, verbose)
    try:
        chosen = select_nodes(router, node, "--node") if node else set()
        if source == STDIN:  # as emit run reads "-"; left open for whoever owns it
            lines: Any = contextlib.nullcontext(sys.stdin.buffer)
        else:
            lines = open(source, "rb")  # noqa: SIM115
    except EmitError as exc:
        usage_error(str(exc))
    except OSError as exc:
        usage_error(f"cannot read {source!r}: {exc.strerror}")
    selection = Selection(failed=failed, nodes=frozenset(chosen))
    with lines as stream:
        records = replay_records(router, source, stream, selection)
        options = RunOptions(
            backend, output or [], dead_letter, fail_fast, trace, record,
            url, timeout, False, workers, app_dir, quiet, verbose,
        )  # fmt: skip
        raise typer.Exit(start(router, locator, records, options, console, inputs=[source]))


def _requeue_failed(router: Router, url: str | None, console: Any) -> int:
    """``emit replay --failed -u URL LOCATOR``: requeue the graph's failed RQ jobs."""
    try:
        connection = connect(router, redis_url(url))
        counts = requeue_failed(router, connection)
    except EmitError as exc:
        usage_error(str(exc))
    except RedisError as exc:
        say(console, unreachable(getattr(router, "redis_connection", None), exc), "red")
        return EXIT_FAILED
    total = sum(counts.values())
    for queue, count in counts.items():
        say(console, f"queue {queue!r}: {count:,} failed job{'s' if count != 1 else ''} requeued")
    if not total:
        say(console, "no failed jobs of this graph to requeue")
    return EXIT_OK


@app.command("inspect")
def inspect_command(
    locator: Annotated[
        str,
        typer.Argument(
            help="Where the Router is (module:attr, module.attr or path/to/file.py:attr), "
            "or a record or dead-letter file to sum up.",
            metavar="LOCATOR|FILE",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the same as one JSON document, for programs."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "-u",
            "--url",
            metavar="URL",
            help="Add the live state of the graph's RQ queues on this Redis "
            "(else EMIT_REDIS_URL, RQ_REDIS_URL, REDIS_URL, when set).",
            show_default=False,
        ),
    ] = None,
    app_dir: AppDir = None,
    verbose: Verbose = 0,
) -> None:
    """Show the graph: each node's fields, patterns and options, the routes, and problems.

    Problems: a subscription or ignore pattern that matches no other node, a
    node the input never reaches, a cycle, two nodes with one short name, no
    entry point.  With a Redis URL, also each queue the graph uses: its jobs
    by state and the workers listening on it.  Exit status: 0 no problems,
    1 problems found, 2 the graph cannot be loaded or Redis cannot be reached.

    Given a record or dead-letter file (emit run --record or --dead-letter, a
    .jsonl file) instead of a graph: per node its hops, messages sent, errors
    and p50/p95/max time, the errors, and the slowest hops; exit status 1 when
    something failed, 2 when the file holds no record or dead-letter line.
    """
    # Imported here, where they are used, so that this command stays one block.
    from .console import render_inspection, render_record_summary
    from .inspection import describe, describe_live
    from .trace import summarise

    if _is_record_file(locator):
        try:
            with open(locator, "rb") as lines:
                summary = summarise(locator, lines)
        except OSError as exc:
            usage_error(f"cannot read {locator!r}: {exc.strerror}")
        if not summary["lines"]:
            usage_error(
                f"{locator!r} holds no record or dead-letter lines "
                "(emit inspect sums up the files of emit run --record and --dead-letter)"
            )
        _print_report(summary, as_json, render_record_summary)
        raise typer.Exit(EXIT_FAILED if summary["errors"] or summary["unreadable"] else EXIT_OK)

    router = _load(locator, app_dir, verbose)
    report = describe(router)
    live_url = redis_url(url)
    if live_url:
        try:
            report["live"] = describe_live(router, live_url)
        except EmitError as exc:
            usage_error(str(exc))
    _print_report(report, as_json, render_inspection)
    raise typer.Exit(EXIT_FAILED if report["problems"] else EXIT_OK)


def _print_report(
    report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]
) -> None:
    """An inspecting command's report on stdout: for people, or as one JSON document."""
    import json

    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n" if as_json else render(report)
    _write_stdout(text.encode())


def _is_record_file(locator: str) -> bool:
    """Whether ``emit inspect`` was given a record file rather than a graph's locator."""
    return locator.endswith((".jsonl", ".ndjson")) or (
        os.path.isfile(locator) and not locator.endswith(".py")
    )


# emit digraph, emit_digraph and emit completion ------------------------------


def _graphviz_formats(incomplete: str) -> list[str]:
    import graphviz  # type: ignore[import-untyped]  # imported only when completing --format

    return [fmt for fmt in sorted(graphviz.FORMATS) if fmt.startswith(incomplete)]


@app.command()
def digraph(
    locator: Locator,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write to FILE, drawn in the format its suffix names (png, svg, pdf, ...); "
            "a .dot or .gv file gets the DOT text.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "-T",
            "--format",
            metavar="FORMAT",
            help="Draw in this Graphviz format whatever the suffix; without -o, "
            "write the drawing to stdout.",
            autocompletion=_graphviz_formats,
            show_default=False,
        ),
    ] = None,
    rankdir: Annotated[
        RankDir | None,
        typer.Option(
            "--rankdir",
            case_sensitive=False,
            metavar="TB|LR|BT|RL",
            help="Lay out top to bottom (TB, the Graphviz default), left to right (LR), "
            "bottom to top (BT) or right to left (RL).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Name of the graph in the DOT text.")
    ] = ("router"),
    app_dir: AppDir = None,
    verbose: Verbose = 0,
) -> None:
    """Print the graph as Graphviz DOT, or draw it with Graphviz.

    One line per route, sorted, as "origin" -> "destination"; entry input
    comes from "__entry_point".  Drawing needs the Graphviz 'dot' program.  Exit
    status 2 when the graph cannot be loaded or drawn.
    """
    router = _load(locator, app_dir, verbose)
    try:
        data = drawing(to_dot(router, name=name, rankdir=rankdir), output, fmt)
    except RenderError as exc:
        usage_error(str(exc))
    if output is None:
        _write_stdout(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        usage_error(f"cannot write {str(output)!r}: {exc.strerror or exc}")


# A console script of its own, as in 2013: ``emit_digraph app.router``.
legacy_app = typer.Typer(
    name="emit_digraph",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
legacy_app.command()(digraph)


def legacy_digraph() -> None:
    """Console-script entry point of ``emit_digraph``: ``emit digraph`` by its 2013 name."""
    legacy_app()


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone (``| head``): stop quietly, and leave nothing
        # buffered for Python to fail on at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Shell(StrEnum):
    """The shells ``emit completion`` writes scripts for."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


#: The variable the completion scripts set when they ask ``emit`` for candidates.
COMPLETE_VAR = "_EMIT_COMPLETE"

# Typer registers its shell-completion classes only for apps that have the
# --install-completion flags; emit has a ``completion`` command instead, so it
# registers them itself, or ``_EMIT_COMPLETE=complete_bash emit`` (what the
# scripts run on each Tab) would answer "Shell bash not supported".
completion_init()


def completion_script(shell: str) -> str:
    """The script that makes ``shell`` complete emit's commands, options and choices.

    The script holds no list of commands: on each Tab it runs ``emit`` with
    ``_EMIT_COMPLETE`` set, and the candidates come from the command tree of
    the emit that is installed.
    """
    return get_completion_script(prog_name="emit", complete_var=COMPLETE_VAR, shell=shell)


@app.command()
def completion(
    shell: Annotated[
        Shell, typer.Argument(help="bash, zsh or fish.", metavar="SHELL", show_default=False)
    ],
) -> None:
    """Print the script that makes SHELL complete emit commands and options.

    Install it once:

    bash: emit completion bash > ~/.local/share/bash-completion/completions/emit

    zsh: emit completion zsh > ~/.zfunc/_emit, and source ~/.zfunc/_emit after compinit in ~/.zshrc

    fish: emit completion fish > ~/.config/fish/completions/emit.fish
    """
    sys.stdout.write(completion_script(shell) + "\n")


def main() -> None:
    """Console-script entry point."""
    # Started with stdin or stderr closed (cron, daemons): read nothing, say
    # nothing, but run; a missing stream must not end the run before it starts.
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    # Integers keep every digit (DESIGN.md): Python refuses to read or write
    # one of more than 4,300 digits unless told, a guard for services parsing
    # untrusted text that a command the user runs on their own data lifts.
    sys.set_int_max_str_digits(0)
    app()
