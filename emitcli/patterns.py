"""Subscription and ignore patterns.

A pattern is a regular expression that must match a node's whole name or the
whole of a dot-separated tail of it: ``emit_words``, ``tasks.emit_words`` and
``.+`` all match ``app.tasks.emit_words``, while ``words`` matches neither
``emit_words`` nor ``app.tasks.emit_words``.  The 2013 library searched
unanchored, so ``words`` matched ``emit_words`` too; anchoring fixes that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import PatternError

# Characters that let a regex match more or less than one character each;
# a pattern free of them matches only names of its own length.
_VARIABLE = frozenset("\\^$*+?{}[]|()")

# Global inline flags such as ``(?i)`` must open the whole expression, so they
# are lifted out in front of the prefix the pattern is wrapped in.
_LEADING_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))*")


class Pattern:
    """One compiled subscription or ignore pattern."""

    __slots__ = ("_plain", "_regex", "text")

    def __init__(self, text: str, node: str) -> None:
        if not isinstance(text, str) or not text:
            raise PatternError(node, text, "a pattern is a non-empty string")
        try:
            re.compile(text)
            body = _LEADING_FLAGS.sub("", text, count=1)
            flags = text[: len(text) - len(body)]
            # An optional run of dot-ended prefixes, then the pattern itself,
            # matched against the whole name: the pattern covers a whole tail.
            self._regex = re.compile(rf"{flags}(?:.*\.)?(?:{body})", re.DOTALL)
        except re.error as exc:
            raise PatternError(node, text, str(exc)) from None
        self.text = text
        self._plain = None if _VARIABLE & set(text) else re.compile(text, re.DOTALL)

    def matches(self, name: str) -> bool:
        """Whether the pattern covers ``name`` or a whole dotted tail of it."""
        return self._regex.fullmatch(name) is not None

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def select(self, index: NameIndex) -> set[str]:
        """The names this pattern matches, looking only where a match can be."""
        plain = self._plain
        if plain is None:
            return {name for name in index.names if self._regex.fullmatch(name)}
        # A fixed-length pattern can only match a tail of its own length.
        return {
            name for tail, name in index.by_length.get(len(self.text), ()) if plain.fullmatch(tail)
        }


class NameIndex:
    """Node names with every dot-separated tail, grouped by length.

    Matching each pattern against every name made resolution slow for big
    graphs; most patterns are plain names, which only a tail of their own
    length can match, so that is all they are tried against.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.by_length: dict[int, list[tuple[str, str]]] = {}
        for name in self.names:
            parts = name.split(".")
            for i in range(len(parts)):
                tail = ".".join(parts[i:])
                self.by_length.setdefault(len(tail), []).append((tail, name))


def as_patterns(spec: str | Iterable[str] | None, node: str) -> tuple[Pattern, ...]:
    """Compile a string or an iterable of strings, refusing bad ones by node."""
    if spec is None:
        return ()
    texts = [spec] if isinstance(spec, str) else list(spec)
    return tuple(Pattern(text, node) for text in texts)


def any_match(patterns: Iterable[Pattern], name: str) -> bool:
    return any(p.matches(name) for p in patterns)
