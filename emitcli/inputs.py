"""Reading records for ``emit run``: raw lines or JSON lines, from files or stdin.

Only ``\\n`` ends a record; a ``\\r`` before it is dropped, and so is a UTF-8
byte order mark at the start of each file.  A line that is not valid UTF-8, or
in JSON mode not one JSON object, becomes a :class:`Record` carrying its
error, so the caller can report it by line number and carry on.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

BOM = b"\xef\xbb\xbf"
STDIN = "-"


@dataclass(slots=True)
class Record:
    """One input line: its place, and either its fields or why it has none."""

    source: str
    line: int
    fields: dict[str, Any] | None
    error: str | None = None
    raw: bytes = b""
    #: The node to send the fields to, skipping the entry points; how
    #: ``emit replay --node`` and ``--failed`` send a message where it was.
    node: str | None = None

    @property
    def where(self) -> str:
        """``<stdin>:3`` or ``data.txt:3``, as compilers and grep print places."""
        name = "<stdin>" if self.source == STDIN else self.source
        return f"{name}:{self.line}"

    @staticmethod
    def place(where: str) -> tuple[str, int | None]:
        """The source and line number a :attr:`where` names (``None``: no line)."""
        name, _, line = where.rpartition(":")
        if not line.isdigit():
            return where, None
        return (STDIN if name == "<stdin>" else name), int(line)

    def raw_for_record(self) -> dict[str, Any]:
        """The line as text (undecodable bytes escaped) and, if needed, as base64."""
        out: dict[str, Any] = {"raw": self.raw.decode("utf-8", "backslashreplace")}
        try:
            self.raw.decode("utf-8")
        except UnicodeDecodeError:
            out["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return out


def read_records(
    sources: Iterable[str], *, json_lines: bool, field: str, stdin: IO[bytes] | None = None
) -> Iterator[Record]:
    """Yield a record for each line of each source (``-`` is stdin)."""
    for source in sources:
        with _open(source, stdin) as stream:
            yield from _records(stream, source, json_lines, field)


@contextmanager
def _open(source: str, stdin: IO[bytes] | None) -> Iterator[IO[bytes]]:
    if source == STDIN:
        yield stdin if stdin is not None else sys.stdin.buffer
        return
    with open(source, "rb") as stream:
        yield stream


def _records(stream: IO[bytes], source: str, json_lines: bool, field: str) -> Iterator[Record]:
    first = True
    for number, raw in enumerate(stream, 1):
        if first:
            first = False
            if raw.startswith(BOM):
                raw = raw[len(BOM) :]
                if not raw:  # a file that is only a byte order mark holds no line
                    return
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Record(source, number, None, f"invalid UTF-8 at byte {exc.start + 1}", raw)
            continue
        if not json_lines:
            yield Record(source, number, {field: text}, raw=raw)
        elif text.strip():  # blank lines between JSON records are skipped
            yield _json_record(source, number, text, raw)


def _json_record(source: str, number: int, text: str, raw: bytes) -> Record:
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return Record(source, number, None, f"invalid JSON: {exc.msg} at column {exc.colno}", raw)
    except ValueError as exc:
        return Record(source, number, None, f"invalid JSON: {exc}", raw)
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        return Record(
            source,
            number,
            None,
            f"expected a JSON object (its keys become fields), got {kind}",
            raw,
        )
    return Record(source, number, value, raw=raw)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large for a float")
    return value
