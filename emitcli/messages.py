"""Messages: the fields a node receives, with routing metadata kept apart.

A :class:`Message` exposes its fields as attributes (``msg.word``) and items
(``msg["word"]``).  Routing metadata lives in underscore slots (``_origin``,
``_run``, ``_hop``, ``_parent``, ``_hops``) so a field may be called ``origin``
without clashing with anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import MessageError

ENTRY_POINT = "__entry_point"


class _NoResultType:
    """The value a node returns to send nothing on."""

    _instance: _NoResultType | None = None

    def __new__(cls) -> _NoResultType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NoResult"

    def __reduce__(self) -> str:
        return "NoResult"

    def __bool__(self) -> bool:
        return False


#: Return this (or ``None``) from a node to stop processing along that path.
NoResult = _NoResultType()


class Message:
    """The fields of one message, with attribute access and metadata apart.

    Build one with a mapping or keywords: ``Message({"word": "a"})`` or
    ``Message(word="a")``.  Fields are stored as the instance's ``__dict__``, so
    reading ``msg.word`` costs what a plain attribute costs; metadata sits in
    slots, which always win over a field of the same name.
    """

    # ``_meta`` is one tuple (origin, run, parent hop, hop count) shared by every
    # message a node invocation sends; ``_hop`` is this delivery's own id.
    # Two slot stores per message instead of five keep dispatch fast.
    __slots__ = ("__dict__", "_hop", "_meta")

    _meta: tuple[str, str | None, int | None, int]
    _hop: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            if len(args) > 1 or kwargs or not isinstance(args[0], Mapping):
                raise MessageError(
                    "a message is built from one mapping or from keywords, "
                    f"not {_describe_args(args, kwargs)}"
                )
            kwargs = dict(args[0])
        self.__dict__ = kwargs
        self._meta = (ENTRY_POINT, None, None, 0)
        self._hop = None

    @property
    def _origin(self) -> str:
        """Name of the node that sent this message (``__entry_point`` for input)."""
        return self._meta[0]

    @property
    def _run(self) -> str | None:
        """Id of the run the message belongs to."""
        return self._meta[1]

    @property
    def _parent(self) -> int | None:
        """Hop id of the node invocation that produced this message."""
        return self._meta[2]

    @property
    def _hops(self) -> int:
        """How many nodes the message has passed through."""
        return self._meta[3]

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup failed, so it costs nothing on a hit.
        if name.startswith("__"):
            raise AttributeError(name)
        present = ", ".join(sorted(self.__dict__)) or "none"
        raise AttributeError(
            f"message from {self._origin!r} has no field {name!r} (fields present: {present})"
        )

    def __getitem__(self, name: str) -> Any:
        try:
            return self.__dict__[name]
        except KeyError:
            present = ", ".join(sorted(self.__dict__)) or "none"
            raise KeyError(
                f"message from {self._origin!r} has no field {name!r} (fields present: {present})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __len__(self) -> int:
        return len(self.__dict__)

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value, or ``default`` when the message lacks it."""
        return self.__dict__.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        """A new dict of the fields; changing it leaves the message alone."""
        return _copy(self.__dict__)

    def as_json(self) -> str:
        """The fields as one compact JSON object (NaN and infinity refused)."""
        return json.dumps(self.__dict__, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @property
    def _metadata(self) -> dict[str, Any]:
        """The routing metadata as a dict (origin, run, hop, parent, hops).

        Underscored like the rest of the metadata: a public name would hide a
        field of that name from attribute access.
        """
        return {
            "origin": self._origin,
            "run": self._run,
            "hop": self._hop,
            "parent": self._parent,
            "hops": self._hops,
        }

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self.__dict__ == other.__dict__
        if isinstance(other, Mapping):
            return self.__dict__ == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # messages are compared by value

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Message({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The class travels too, so a router's own message_class survives pickling.
        return (_rebuild, (type(self), dict(self.__dict__), self._metadata))


def _rebuild(cls: type[Message], fields: dict[str, Any], meta: dict[str, Any]) -> Message:
    # Built without calling ``cls.__init__``, which a subclass may have changed.
    msg: Message = object.__new__(cls)
    msg.__dict__ = fields
    msg._meta = (meta["origin"], meta["run"], meta["parent"], meta["hops"])
    msg._hop = meta["hop"]
    return msg


def _copy(value: Any) -> Any:
    """Copy JSON-shaped data deeply enough that no list or dict is shared."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_copy(v) for v in value]
    return value


def _clone(message: Message) -> Message:
    """A message of the same class and metadata whose fields share no list or dict."""
    clone: Message = object.__new__(type(message))
    clone.__dict__ = _copy(message.__dict__)
    clone._meta = message._meta
    clone._hop = message._hop
    return clone


def _describe_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    kinds = ", ".join(type(a).__name__ for a in args)
    extra = f" and keywords {sorted(kwargs)}" if kwargs else ""
    return f"{len(args)} positional argument(s) ({kinds}){extra}"
