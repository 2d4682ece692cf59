"""Everything emit shows people, on stderr, through one rich console.

All rich code lives here, so the library imports without a terminal and tests
can fix the width.  ``NO_COLOR`` is honoured by rich itself; when stderr is not
a terminal no colour codes are written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

if TYPE_CHECKING:
    from .runner import Failure, Stats


def make_console() -> Console:
    """The stderr console every command prints through."""
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    # NO_COLOR asks for no colour; rich drops colours but keeps bold, so turn
    # every escape code off.
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(
        stderr=True,
        highlight=False,
        soft_wrap=True,
        width=width,
        color_system=None if plain else "auto",
    )


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
def progress(console: Console, stats: Stats, enabled: bool) -> Iterator[None]:
    """Show a live progress line while the block runs, when stderr is a terminal."""
    if not (enabled and console.is_terminal):
        yield
        return
    # Live redraws from its own thread four times a second; the run itself
    # only bumps integers, so progress costs nothing per record.
    with Live(
        _Progress(stats),
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


# emit inspect ---------------------------------------------------------------


def render_inspection(report: Mapping[str, Any]) -> str:
    """``emit inspect``'s page for people, from :func:`emitcli.inspection.describe`.

    A tree of the input and each node (fields, patterns, options, where it
    sends), problems marked in red on their nodes and listed at the end.
    Rendered for stdout, which is for people here as in ``rq info``: colours
    only when stdout is a terminal and ``NO_COLOR`` is unset.
    """
    console = _stdout_console()
    with console.capture() as captured:
        console.print(_graph_tree(report))
        console.print()
        console.print(_problem_list(report["problems"]))
    return captured.get()


def _stdout_console() -> Console:
    # make_console's rules, for stdout: the console is created here, while
    # the command runs, so it writes to the stdout of that moment.
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(
        file=sys.stdout,
        highlight=False,
        soft_wrap=True,
        width=width,
        color_system=None if plain else "auto",
    )


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
