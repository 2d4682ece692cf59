"""How messages travel between processes: JSON or msgpack, never pickle.

Both codecs are RQ serializers (``dumps``/``loads``), so a job's whole data
(function name and arguments) is JSON or msgpack and a stock ``rq worker`` can
read it with ``--serializer emitcli.codec.JSONSerializer``.  JSON carries
integers of any size; msgpack carries those past 64 bits as an extension
type holding their decimal digits, so no codec loses a digit.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack  # type: ignore[import-untyped]

# msgpack's own integers stop at 64 bits; bigger ones travel as their digits.
_BIG_INT = 42


class JSONSerializer:
    """Compact JSON; NaN and infinity refused, as everywhere in emit."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    @staticmethod
    def loads(data: bytes | str) -> Any:
        return json.loads(data)


class MsgpackSerializer:
    """msgpack, with integers past 64 bits kept exact."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, default=_pack_extra)
        return packed

    @staticmethod
    def loads(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_unpack_extra)


SERIALIZERS: dict[str, type[JSONSerializer] | type[MsgpackSerializer]] = {
    "json": JSONSerializer,
    "msgpack": MsgpackSerializer,
}


def serializer_for(name: str) -> type[JSONSerializer] | type[MsgpackSerializer]:
    """The serializer called ``name`` (``json`` or ``msgpack``)."""
    try:
        return SERIALIZERS[name]
    except KeyError:
        known = ", ".join(SERIALIZERS)
        raise ValueError(f"unknown serializer {name!r}; use one of: {known}") from None


def _pack_extra(value: Any) -> Any:
    if isinstance(value, int):
        return msgpack.ExtType(_BIG_INT, str(value).encode())
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot travel as msgpack")


def _unpack_extra(code: int, data: bytes) -> Any:
    if code == _BIG_INT:
        return int(data.decode())
    return msgpack.ExtType(code, data)
