"""Everything emit shows people, on stderr, through one rich console.

All rich code lives here, so the library imports without a terminal and tests
can fix the width.  ``NO_COLOR`` is honoured by rich itself; when stderr is not
a terminal no colour codes are written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .inputs import Record
from .trace import HopEvent, Tally, hop_tree

if TYPE_CHECKING:
    from .runner import Failure, Stats


#: The width of a console that is not a terminal (a log file, a pipe): lines
#: are not cut at 80 columns there, since nobody reads them in a window.
UNBOUNDED_WIDTH = 1_000


def make_console() -> Console:
    """The stderr console every command prints through."""
    return _console(stderr=True)


def _console(**target: Any) -> Console:
    """A console with emit's rules: ``COLUMNS`` or the terminal's width, else no cut;
    no colour codes with ``NO_COLOR``."""
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    # NO_COLOR asks for no colour; rich drops colours but keeps bold, so turn
    # every escape code off.
    plain = bool(os.environ.get("NO_COLOR"))
    console = Console(
        highlight=False,
        soft_wrap=True,
        width=width,
        color_system=None if plain else "auto",
        **target,
    )
    if width is None and not console.is_terminal:
        console.width = UNBOUNDED_WIDTH
    return console


def say(console: Console, text: str, style: str | None = None) -> None:
    """Print one line prefixed with ``emit:``, markup in ``text`` taken literally."""
    console.print(Text("emit: ", style="bold") + Text(text, style=style or ""))


def report_failure(console: Console, failure: Failure, traceback_text: str | None) -> None:
    say(console, failure.line(), "red")
    if traceback_text:
        console.print(escape(traceback_text), style="dim")


def summary(stats: Stats, stopped: str | None = None) -> str:
    """One line: records, messages out, failures, time and rate; why it stopped early."""
    seconds = stats.elapsed
    rate = stats.records / seconds if seconds > 0 else 0.0
    parts = [
        f"{stats.records:,} record{'s' if stats.records != 1 else ''}",
        f"{stats.outputs:,} message{'s' if stats.outputs != 1 else ''} out",
    ]
    if stats.errors:
        parts.append(f"{stats.errors:,} error{'s' if stats.errors != 1 else ''}")
    if stats.bad_input:
        parts.append(f"{stats.bad_input:,} bad input line{'s' if stats.bad_input != 1 else ''}")
    text = ", ".join(parts) + f" in {seconds:.2f}s ({_rate(rate)} records/s)"
    return f"{stopped} after {text}" if stopped else text


class _Progress:
    """A live line rendered from the run's counters, which it only reads."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def __rich__(self) -> Text:
        stats = self.stats
        seconds = stats.elapsed
        rate = stats.records / seconds if seconds > 0 else 0.0
        line = Text.assemble(
            ("emit: ", "bold"),
            f"{_count(stats.records, 'record')} read, {_count(stats.outputs, 'message')} out, ",
            (_count(stats.failed, "error"), "red" if stats.failed else ""),
            f", {_rate(rate)} records/s",
        )
        return line


@contextmanager
def progress(console: Console, stats: Stats, enabled: bool, above: Any = None) -> Iterator[None]:
    """Show a live progress line while the block runs, when stderr is a terminal.

    ``above``, when given, is drawn over the line (the ``--trace`` table).
    """
    if not (enabled and console.is_terminal):
        yield
        return
    shown: Any = _Progress(stats) if above is None else Group(above, _Progress(stats))
    # Live redraws from its own thread four times a second; the run itself
    # only bumps integers, so progress costs nothing per record.
    with Live(
        shown,
        console=console,
        refresh_per_second=4,
        transient=True,
        redirect_stdout=True,
        redirect_stderr=True,
    ):
        yield


def _rate(rate: float) -> str:
    """Whole numbers for fast runs, one decimal for slow ones (never a bare 0)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# emit run --trace -----------------------------------------------------------

#: Records drawn as trees before a run switches to its table of nodes.
TREE_RECORDS = 20
#: Hops shown under one hop of a tree; the rest are counted.
TREE_BRANCHES = 12
#: Hops of one record kept for its tree, so that a record sending millions of
#: messages does not hold them all; failed hops are kept up to as many again.
TREE_HOPS = 1_000
_FIELDS_WIDTH = 72


class _Kept:
    """The hops of one record that its tree will show, and a count of the rest."""

    __slots__ = ("dropped", "dropped_errors", "events", "parents")

    def __init__(self) -> None:
        self.events: list[HopEvent] = []
        #: The hops that sent a kept hop its message: a generator's own event
        #: comes after all it sent, and the tree needs it to hang them on.
        self.parents: set[Any] = set()
        self.dropped = 0
        self.dropped_errors = 0

    def add(self, event: HopEvent) -> None:
        kept = len(self.events)
        failed = event.outcome == "error"
        if kept < TREE_HOPS or (kept < 2 * TREE_HOPS and (failed or event.hop in self.parents)):
            self.events.append(event)
            self.parents.add(event.parent)
            return
        self.dropped += 1
        self.dropped_errors += failed


class TraceView:
    """``--trace`` on stderr: a tree per record, then a live table per node.

    The first :data:`TREE_RECORDS` records are drawn as trees as each ends
    (node, the fields it took, its time, errors in red).  A longer stream
    is then followed in a table per node (messages in and out, errors, mean
    and p95 time, rate), live on a terminal and printed once at the end.

    With ``by_record`` (RQ, where records end in no order anyone sees) the
    events are grouped by their input record as they come, and a run of up
    to :data:`TREE_RECORDS` records is drawn as trees when it ends.
    """

    def __init__(self, console: Console, *, by_record: bool = False) -> None:
        self.console = console
        self.tally = Tally(sample=10_000)
        self.records = 0
        self._hops = _Kept()
        #: The events of each input record so far; ``None`` once there are too many.
        self._groups: dict[tuple[str, int], _Kept] | None = {} if by_record else None

    def hop(self, event: HopEvent) -> None:
        self.tally.event(event)
        groups = self._groups
        if groups is not None:
            key = (event.source or "?", event.line or 0)
            if key not in groups:
                self.records += 1
                if self.records > TREE_RECORDS:
                    self._groups = None
                    return
            kept = groups.get(key)
            if kept is None:
                kept = groups[key] = _Kept()
            kept.add(event)
        elif self.records < TREE_RECORDS:
            self._hops.add(event)

    def record_end(self, record: Record) -> None:
        self.records += 1
        if self.records <= TREE_RECORDS:
            self.console.print(_record_tree(record, self._hops))
            self._hops = _Kept()

    @property
    def long(self) -> bool:
        return self.records > TREE_RECORDS

    def finish(self) -> None:
        """Print the table of nodes at the end of a long run; the trees of a short
        one grouped by record."""
        if self.long:
            self.console.print(self.table())
            return
        for (source, line), kept in sorted((self._groups or {}).items()):
            self.console.print(_record_tree(Record(source, line, None), kept))

    def table(self) -> Table:
        seconds = max(time.monotonic() - self.tally.started, 1e-9)
        table = Table(title="hops per node", title_justify="left", box=box.SIMPLE_HEAD)
        for title in ("node", "in", "out", "errors", "mean", "p95", "in/s"):
            table.add_column(title, justify="left" if title == "node" else "right", overflow="fold")
        for node in self.tally:
            table.add_row(
                node.node,
                f"{node.hops:,}",
                f"{node.sent:,}",
                Text(f"{node.errors:,}", style="red" if node.errors else ""),
                duration(node.mean),
                duration(node.quantile(0.95)),
                _rate(node.hops / seconds),
            )
        return table

    def __rich__(self) -> Any:
        return self.table() if self.long else Text("")


def _record_tree(record: Record, kept: _Kept) -> Tree:
    label = Text(record.where, style="bold")
    if record.node is not None:
        label.append(f" to {record.node}")
    if not kept.events:
        label.append(" " + _fields(record.fields or {}), style="dim")
    root = Tree(label)
    _add_hops(root, hop_tree(kept.events), _failing(kept.events))
    if kept.dropped:
        more = f"... {_count(kept.dropped, 'more hop')} not kept"
        failed = f", {kept.dropped_errors:,} failed" if kept.dropped_errors else ""
        root.add(Text(more + failed, style="bold red" if failed else "dim"))
    return root


def _failing(events: list[HopEvent]) -> set[Any]:
    """The hops that failed, and every hop on the way to one."""
    parents = {event.hop: event.parent for event in events}
    marked: set[Any] = set()
    for event in events:
        hop = event.hop if event.outcome == "error" else None
        while hop is not None and hop not in marked:
            marked.add(hop)
            hop = parents.get(hop)
    return marked


def _add_hops(branch: Tree, hops: list[Any], failing: set[Any]) -> None:
    # Past the first branches, those that lead to a failure are still drawn:
    # a tree cut short must not hide where the record failed.
    rest = hops[TREE_BRANCHES:]
    failed_later = [hop for hop in rest if hop[0].hop in failing][:TREE_BRANCHES]
    for event, children in hops[:TREE_BRANCHES] + failed_later:
        label = Text.assemble((event.node, "bold"), " ", (_fields(event.fields), "dim"))
        label.append(f" {duration(event.duration)}")
        if event.outcome == "error":
            label.append(f" {event.error_type}: {event.error_text}", style="bold red")
        elif event.outcome == "no result":
            label.append(" no result", style="dim")
        _add_hops(branch.add(label), children, failing)
    if len(rest) > len(failed_later):
        shown = {id(hop) for hop in failed_later}
        hidden = [hop for hop in rest if id(hop) not in shown]
        errors = sum(1 for event, _ in hidden if event.outcome == "error")
        more = f"... {_count(len(hidden), 'more hop')}"
        branch.add(Text(more + (f", {errors:,} failed" if errors else ""), style="dim"))


def _fields(fields: Mapping[str, Any]) -> str:
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=repr)
    return text if len(text) <= _FIELDS_WIDTH else text[: _FIELDS_WIDTH - 3] + "..."


def duration(seconds: float) -> str:
    """A duration people read at a glance: 850ns, 12.5µs, 3.2ms, 1.50s."""
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


# emit inspect ---------------------------------------------------------------


def render_inspection(report: Mapping[str, Any]) -> str:
    """``emit inspect``'s page for people, from :func:`emitcli.inspection.describe`.

    A tree of the input and each node (fields, patterns, options, where it
    sends), problems marked in red on their nodes and listed at the end, then
    with ``-u`` a list of the graph's queues and their workers.  Rendered for
    stdout, which is for people here as in ``rq info``: colours only when
    stdout is a terminal and ``NO_COLOR`` is unset.
    """
    console = _stdout_console()
    with console.capture() as captured:
        console.print(_graph_tree(report))
        console.print()
        console.print(_problem_list(report["problems"]))
        if "live" in report:
            console.print()
            console.print(_live_list(report["live"]))
    return captured.get()


def _stdout_console() -> Console:
    # Created here, while the command runs, so it writes to the stdout of that moment.
    return _console(file=sys.stdout)


def _graph_tree(report: Mapping[str, Any]) -> Tree:
    # Every label is a Text: a plain string would be read as rich markup, and
    # a node named ``port:compass:n`` would show an emoji.
    nodes = report["nodes"]
    root = Tree(
        Text.assemble(
            (report["router"], "bold"),
            f": {_count(len(nodes), 'node')}, a message passes at most {report['max_hops']} hops",
        )
    )
    routes = report["routes"]
    entry = root.add(Text.assemble(("__entry_point", "bold"), " (the graph's input)"))
    _add_destinations(entry, routes["__entry_point"])
    for node in nodes:
        _add_node(root, node, routes[node["name"]], report["problems"])
    return root


def _add_node(
    root: Tree, node: Mapping[str, Any], destinations: list[str], problems: list[Any]
) -> None:
    name = node["name"]
    own = [p for p in problems if name in p["nodes"]]
    label = Text(name, style="bold")
    if node["entry_point"]:
        label.append(" entry point", style="cyan")
    if own:
        kinds = sorted({p["kind"] for p in own})
        label.append(f" ! {', '.join(kinds)}", style="bold red")
    branch = root.add(label)
    branch.add(Text("fields: " + (", ".join(node["fields"]) or "none")))
    bad = {p["pattern"] for p in own if p["pattern"] is not None}
    for key, title in (("subscribe_to", "subscribes to"), ("ignore", "ignores")):
        if node[key]:
            branch.add(_patterns(title, node[key], bad))
    if node["options"]:
        options = ", ".join(f"{k}={_option(v)}" for k, v in node["options"].items())
        branch.add(Text(f"options: {options}"))
    _add_destinations(branch, destinations)


def _patterns(title: str, patterns: list[str], bad: set[str]) -> Text:
    line = Text(f"{title}: ")
    for i, pattern in enumerate(patterns):
        line.append(", " if i else "")
        line.append(pattern, style="bold red" if pattern in bad else "")
    return line


def _option(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _add_destinations(branch: Tree, destinations: list[str]) -> None:
    if not destinations:
        branch.add(Text("sends to nothing", style="dim"))
        return
    sends = branch.add(Text("sends to"))
    for destination in destinations:
        sends.add(Text(destination))


def _problem_list(problems: list[Mapping[str, Any]]) -> Text:
    if not problems:
        return Text("no problems found", style="green")
    lines = Text(_count(len(problems), "problem"), style="bold red")
    for problem in problems:
        lines.append("\n- ")
        lines.append(problem["kind"], style="bold red")
        lines.append(f": {problem['text']}")
    return lines


def _live_list(live: Mapping[str, Any]) -> Text:
    # A list like the problems', not a tree: a tree cuts its lines at the
    # width, and the counts of a queue make a long line.
    queues = live["queues"]
    lines = Text.assemble(("live", "bold"), f" on {live['url']}: {_count(len(queues), 'queue')}")
    for name, queue in queues.items():
        lines.append("\n- queue ")
        lines.append(name, style="bold")
        counts = [(state, n) for state, n in queue.items() if state != "workers"]
        for i, (state, n) in enumerate(counts):
            lines.append(", " if i else ": ")
            lines.append(f"{n:,} {state}", style="red" if state == "failed" and n else "")
        if not queue["workers"]:
            lines.append("; no worker listens", style="dim")
        for worker in queue["workers"]:
            lines.append("\n  - worker ")
            lines.append(worker["name"], style="bold")
            lines.append(f": {worker['state']}")
            if worker["current_job"]:
                lines.append(f" on job {worker['current_job']}")
            lines.append(f", pid {worker['pid']} on {worker['hostname']}")
    return lines


# emit inspect FILE.jsonl ------------------------------------------------------


def render_record_summary(summary: Mapping[str, Any]) -> str:
    """``emit inspect``'s page for a record file, from :func:`emitcli.trace.summarise`."""
    console = _stdout_console()
    runs = summary["runs"]
    hops = summary["lines"].get("hop", 0)
    head = Text.assemble(
        (summary["file"], "bold"),
        f": {_count(hops, 'hop')} in {_count(len(runs), 'run')}",
    )
    for kind, count in sorted(summary["lines"].items()):
        if kind not in ("hop", "run"):
            head.append(f", {_count(count, kind + ' line')}")
    if summary["unreadable"]:
        head.append(f", {_count(summary['unreadable'], 'unreadable line')}", style="red")
    table = Table(box=box.SIMPLE_HEAD)
    for title in ("node", "hops", "sent", "errors", "p50", "p95", "max"):
        table.add_column(title, justify="left" if title == "node" else "right", overflow="fold")
    for node in summary["nodes"]:
        table.add_row(
            node["node"],
            f"{node['hops']:,}",
            f"{node['sent']:,}",
            Text(f"{node['errors']:,}", style="red" if node["errors"] else ""),
            duration(node["p50"]),
            duration(node["p95"]),
            duration(node["max"]),
        )
    with console.capture() as captured:
        console.print(head)
        if summary["nodes"]:
            console.print(table)
        for error in summary["errors"]:
            times = _count(error["count"], "time")
            if error["node"] is None and error["type"] == "InputError":
                what = f"input that could not be read {times}"
            elif error["node"] is None:
                # A record stopped by Ctrl-C or sys.exit(): no node failed.
                what = f"records stopped part-way ({error['type']}) {times}"
            else:
                what = f"{error['node']} raised {error['type']} {times}"
            console.print(Text.assemble(("errors: ", "bold red"), what))
        if summary["slowest"]:
            console.print(Text("slowest hops:", style="bold"))
        for hop in summary["slowest"]:
            line = hop["input_line"]
            where = Record(hop["source"] or "?", line, None).where if line else "?"
            console.print(
                Text.assemble(
                    f"  {duration(hop['duration']):>8}  ",
                    (hop["node"], "bold"),
                    f" {_fields(hop['fields'] or {})}",
                    (f"  (input {where}, record line {hop['line']})", "dim"),
                )
            )
    return captured.get()
