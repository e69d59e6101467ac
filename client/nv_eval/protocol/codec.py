"""Encoding and decoding of bus messages, with one-line typed errors for malformed input."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    """A message on the bus could not be decoded into the expected type."""


def encode(msg: Any) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | str, type_: type[T] | Any) -> T:
    try:
        return msgspec.json.decode(data, type=type_)  # type: ignore[no-any-return]
    except msgspec.ValidationError as e:
        raise ProtocolError(f"invalid {_name(type_)} message: {e}") from None
    except msgspec.DecodeError as e:
        raise ProtocolError(f"malformed {_name(type_)} message: {e}") from None


def _name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t)
