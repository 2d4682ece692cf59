"""Everything emit shows people, on stderr, through one rich console.

All rich code lives here, so the library imports without a terminal and tests
can fix the width.  ``NO_COLOR`` is honoured by rich itself; when stderr is not
a terminal no colour codes are written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

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
