"""The one exception every check raises, and how a refused value is named in it."""

from __future__ import annotations

from typing import Any


class MessageError(ValueError):
    """A payload or a declared object is invalid; the message names the field and says why."""


# CBOR's names for what cbor2 builds, so that an error speaks of the bytes the sender wrote.
_CBOR_TYPES = {dict: "map", list: "array", str: "text", bytes: "byte string", bool: "bool", int: "integer",
               float: "float", type(None): "null"}


def cbor_type(value: Any) -> str:
    """The CBOR name of an exact built-in type; any other type (a subclass, numpy's) by its own name."""
    return _CBOR_TYPES.get(type(value)) or type(value).__name__


def shown(value: Any) -> str:
    """Text is quoted and cut at 80 characters; anything else is named by its type (never printed whole)."""
    return f"{value!r:.80}" if type(value) is str else cbor_type(value)


def shown_integer(value: Any) -> str:
    """An integer is printed if it fits 64 bits; a longer one, or another type, is named."""
    return str(value) if type(value) is int and value.bit_length() <= 64 else cbor_type(value)


def number_text(value: float) -> str:
    """A bound as a person writes it: 604800, not 604800.0."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else repr(value)
