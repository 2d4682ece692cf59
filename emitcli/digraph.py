"""A picture of the graph: Graphviz DOT text from a Router, and rendering it.

:func:`to_dot` needs nothing but the router and writes the 2013 shape, one
quoted ``"origin" -> "destination";`` statement per route, with entry input
drawn from ``__entry_point``.  :func:`render` hands that text to the Graphviz
``dot`` program through the ``graphviz`` package.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from .errors import EmitError
from .router.core import Router

#: Where a user who has no ``dot`` program can get it.
INSTALL_HINT = (
    "install Graphviz (apt-get install graphviz, dnf install graphviz, brew install graphviz, "
    "or https://graphviz.org/download/)"
)

#: Suffixes of files that get the DOT text itself, so they need no Graphviz.
SOURCE_SUFFIXES = frozenset({"dot", "gv"})

_BARE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# DOT keywords are case-independent; as bare identifiers they would start a statement.
_KEYWORDS = frozenset({"node", "edge", "graph", "digraph", "subgraph", "strict"})
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


class RankDir(StrEnum):
    """The directions Graphviz lays a graph out in (its ``rankdir`` attribute)."""

    TB = "TB"
    LR = "LR"
    BT = "BT"
    RL = "RL"


class RenderError(EmitError):
    """The graph cannot be drawn as asked.

    Raised for an unknown format or rankdir, a missing ``dot`` program, or
    ``dot`` failing; the message is one line that says what to do.
    """


def quote(text: str) -> str:
    """``text`` as a quoted DOT string, whatever characters it holds.

    Every backslash is doubled and every quote escaped, so no name can end the
    string early or escape its closing quote.  Graphviz reads a label as an
    escape string, so the node shows the single backslash again.  Line breaks
    become ``\\n``: each statement stays on one line.
    """
    return '"' + text.translate(_ESCAPES) + '"'


def graph_id(name: str) -> str:
    """The graph's name after ``digraph``: bare as in the 2013 shape when DOT allows it."""
    if _BARE_ID.fullmatch(name) and name.lower() not in _KEYWORDS:
        return name
    return quote(name)


def route_pairs(router: Router) -> list[tuple[str, str]]:
    """Every ``(origin, destination)`` of the graph, sorted, entry input from ``__entry_point``."""
    routes = router.routes
    return sorted({(origin, spec.name) for origin, specs in routes.items() for spec in specs})


def isolated_nodes(router: Router) -> list[str]:
    """Names of the nodes no route reaches or leaves, sorted."""
    linked = {name for pair in route_pairs(router) for name in pair}
    return sorted(set(router.nodes) - linked)


def to_dot(router: Router, *, name: str = "router", rankdir: str | None = None) -> str:
    """The graph as DOT text: routes sorted, then the nodes without any route.

    Node names are always quoted, so names such as ``node`` or ``graph`` (DOT
    keywords) and names with quotes, backslashes or colons are drawn as they
    are.  Cycles are drawn like any other route.
    """
    lines = [f"digraph {graph_id(name)} {{"]
    if rankdir is not None:
        lines.append(f"rankdir={_rankdir(rankdir)};")
    lines += [f"{quote(origin)} -> {quote(dest)};" for origin, dest in route_pairs(router)]
    lines += [f"{quote(node)};" for node in isolated_nodes(router)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def drawing(source: str, path: str | Path | None = None, fmt: str | None = None) -> bytes:
    """What ``emit digraph`` writes: the DOT text, or Graphviz's drawing of it.

    ``fmt`` wins; without it a file is drawn in the format its suffix names,
    except ``.dot`` and ``.gv`` files, which get the DOT text itself.  With
    neither, the result is the DOT text.
    """
    if fmt is None and path is not None:
        fmt = _suffix_format(path)
        if fmt in SOURCE_SUFFIXES:
            return source.encode()
    return render(source, fmt.lower()) if fmt else source.encode()


def render(source: str, fmt: str) -> bytes:
    """``source`` drawn by Graphviz ``dot`` in format ``fmt`` (png, svg, pdf, ...)."""
    # Imported here: DOT text needs no Graphviz, and every ``emit`` start
    # (a shell completion too) would otherwise pay for this import.
    import graphviz  # type: ignore[import-untyped]

    if fmt not in graphviz.FORMATS:
        known = ", ".join(sorted(graphviz.FORMATS))
        raise RenderError(f"Graphviz knows no format {fmt!r}; it knows {known}")
    try:
        return graphviz.Source(source).pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
        raise RenderError(
            f"cannot draw {fmt}: the Graphviz program 'dot' is not on PATH; {INSTALL_HINT}"
        ) from None
    except graphviz.CalledProcessError as exc:
        raise RenderError(f"dot -T{fmt} failed: {_first_line(exc.stderr)}") from None


def _rankdir(value: str) -> str:
    try:
        return RankDir(value.upper()).value
    except ValueError:
        known = ", ".join(RankDir)
        raise RenderError(f"rankdir must be one of {known}, not {value!r}") from None


def _suffix_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lstrip(".").lower()
    if not suffix:
        raise RenderError(
            f"cannot tell the format of {str(path)!r} without a suffix; "
            "name it like graph.png or give --format"
        )
    return suffix


def _first_line(stderr: bytes | str | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message from dot"
