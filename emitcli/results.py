"""Turning what a node returns into field dicts, and checking their values.

The rules (DESIGN.md, "Results"): a tuple is zipped with the fields and must
have their length; a dict whose keys are exactly the fields is the message
itself; any other single value fills a one-field node; ``NoResult`` and
``None`` send nothing.  This runs once per message, so each node gets a shaper
compiled for its own fields instead of a generic ``dict(zip(...))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import ResultError, ValueTypeError
from .messages import NoResult

Shaper = Callable[[Any], "dict[str, Any] | None"]

_SCALARS = frozenset({str, int, bool, type(None)})


def make_shaper(node: str, fields: tuple[str, ...]) -> Shaper:
    """Build the function that turns one result of ``node`` into a checked field dict.

    The function is generated for the node's own fields: unpacking into locals
    and a dict display, with the JSON check inlined for scalar values, runs
    several times faster than ``dict(zip(...))`` plus a generic check, and this
    runs once per message.  Only field names (through ``repr``) reach the source.
    """
    n = len(fields)
    names = [f"v{i}" for i in range(n)]
    unpack = (", ".join(names) + ("," if n == 1 else "") + " = r") if n else "pass"
    from_dict = "; ".join(f"{v} = r[{f!r}]" for v, f in zip(names, fields, strict=True)) or "pass"
    single = f"{names[0]} = r" if n == 1 else "return bad(r)"
    display = "{" + ", ".join(f"{f!r}: {v}" for f, v in zip(fields, names, strict=True)) + "}"
    scalar = " and ".join(f"type({v}) in scalars" for v in names) or "True"
    source = f"""
def shape(r):
    kind = type(r)
    if kind is tuple:
        if len(r) != {n}:
            return bad(r)
        {unpack}
    elif r is None or r is NoResult:
        return None
    elif kind is dict and r.keys() == keys:
        {from_dict}
    else:
        {single}
    if {scalar}:
        return {display}
    d = {display}
    check(node, fields, d)
    return d
"""
    namespace: dict[str, Any] = {
        "NoResult": NoResult,
        "keys": frozenset(fields),
        "bad": _complaint(node, fields),
        "scalars": _SCALARS,
        "check": check_values,
        "node": node,
        "fields": fields,
    }
    exec(compile(source, f"<emit shaper for {node}>", "exec"), namespace)
    shape: Shaper = namespace["shape"]
    return shape


def _complaint(node: str, fields: tuple[str, ...]) -> Callable[[Any], None]:
    def bad(result: Any) -> None:
        raise ResultError(node, fields, describe_bad_result(fields, result))

    return bad


def describe_bad_result(fields: tuple[str, ...], result: Any) -> str:
    """Say why ``result`` does not fit ``fields``, for the error message."""
    shown = _short_repr(result)
    if isinstance(result, tuple):
        return (
            f"returned a tuple of {len(result)} value(s) for {len(fields)} field(s): {shown}; "
            "return one value per field, in the declared order"
        )
    if isinstance(result, dict) and len(fields) != 1:
        missing = sorted(set(fields) - set(result))
        extra = sorted(set(result) - set(fields))
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        return f"returned a dict whose keys are not its fields ({', '.join(parts)}): {shown}"
    return (
        f"returned {type(result).__name__} {shown}; a node with {len(fields)} fields "
        "returns a tuple of that length or a dict with exactly those keys"
    )


def check_values(node: str, fields: tuple[str, ...], values: dict[str, Any]) -> bool:
    """Refuse values JSON cannot carry; return whether any list or dict is present."""
    nested = False
    for name, value in values.items():
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is float:
            if value - value != 0.0:  # NaN and both infinities, without a call
                raise ValueTypeError(node, fields, name, f"{value!r} is not a JSON number")
            continue
        _check_nested(node, fields, name, value, 0)
        nested = True
    return nested


def _check_nested(node: str, fields: tuple[str, ...], name: str, value: Any, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValueTypeError(node, fields, name, f"holds {value!r}, which is not a JSON number")
        return
    if depth > 500:
        raise ValueTypeError(node, fields, name, "is nested more than 500 levels deep")
    if kind is list or kind is tuple:
        for item in value:
            _check_nested(node, fields, name, item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueTypeError(
                    node, fields, name, f"has a dict key {key!r} that is not a string"
                )
            _check_nested(node, fields, name, item, depth + 1)
        return
    if isinstance(value, (str, int)):  # str and int subclasses, enums among them
        return
    if isinstance(value, float):  # float subclasses such as numpy.float64
        if not math.isfinite(value):
            raise ValueTypeError(node, fields, name, f"holds {value!r}, which is not a JSON number")
        return
    raise ValueTypeError(
        node,
        fields,
        name,
        f"holds {type(value).__name__} {_short_repr(value)}, which JSON cannot carry; "
        "convert it to a string, number, bool, None, list or dict",
    )


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
