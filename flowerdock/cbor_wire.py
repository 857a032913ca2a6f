"""CBOR bytes from an untrusted peer, parsed safely; and CBOR written deterministically.

Parsing refuses, before any object is built from them: every semantic tag (cbor2 would
otherwise build sets, regexes, shared references, big numbers, dates...), indefinite
lengths, duplicate keys, containers nested deeper than the caller allows, and trailing
bytes. The caller caps the size before calling: a length is checked without decoding.
"""

from __future__ import annotations

import io
import threading
from typing import Any, TypeVar

import cbor2

from flowerdock.errors import MessageError

V = TypeVar("V")


class _RefuseEveryTag(dict):
    """A `semantic_decoders` table that answers every tag number with a refusal. cbor2
    decodes many tags itself before `tag_hook` sees them; this table overrides all of them."""

    def __missing__(self, tag: int) -> Any:
        def refuse(_immutable: bool) -> None:
            raise MessageError(f"CBOR tag {tag} is not allowed")
        # cbor2 calls a "shareable" decoder as soon as it reads the tag number, before
        # it decodes the tagged item: a tag costs no work, and nothing is built from it.
        return cbor2.shareable_decoder(refuse, name=f"tag {tag}")

    def __contains__(self, tag: object) -> bool:
        return True

    def get(self, tag: Any, default: Any = None) -> Any:
        return self[tag]


def _refuse_unknown_tag(*_args: Any) -> None:  # a backstop: the table above answers first
    raise MessageError("CBOR tags are not allowed")


_DECODER_OPTIONS: dict[str, Any] = dict(
    tag_hook=_refuse_unknown_tag, semantic_decoders=_RefuseEveryTag(), allow_indefinite=False,
    allow_duplicate_keys=False, strict_hashable_types=True)


class _Decoders(threading.local):
    """One decoder per thread and depth cap, built once: a new one per call adds a tenth to a
    small decode. Assigning `fp` empties its read buffer: nothing of an earlier payload is read again."""

    def __init__(self) -> None:
        self.by_depth: dict[int, cbor2.CBORDecoder] = {}

    def get(self, max_depth: int) -> cbor2.CBORDecoder:
        decoder = self.by_depth.get(max_depth)
        if decoder is None:
            decoder = cbor2.CBORDecoder(io.BytesIO(), max_depth=max_depth, **_DECODER_OPTIONS)
            self.by_depth[max_depth] = decoder
        return decoder


_THREAD = _Decoders()


def parse(data: bytes, max_depth: int) -> Any:
    """The one CBOR item `data` holds, or MessageError."""
    stream = io.BytesIO(data)
    decoder = _THREAD.get(max_depth)
    try:
        decoder.fp = stream
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises several types; all of them mean "bad bytes"
        if isinstance(exc.__cause__, MessageError):  # a refused tag: say which
            raise exc.__cause__ from None
        raise MessageError(f"not valid CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise MessageError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value


def canonical(entries: dict[str, V]) -> dict[str, V]:
    """The map in canonical CBOR order: shorter UTF-8 key first, then bytewise.

    By hand, because cbor2's canonical=True sorts slowly. UTF-8 keeps code-point order,
    so str order is byte order; for ASCII len() is the UTF-8 length."""
    keys = sorted(entries)
    keys.sort(key=len if "".join(keys).isascii() else lambda key: len(key.encode()))
    return entries if keys == list(entries) else {key: entries[key] for key in keys}


def canonical_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda key: (len(key.encode()), key.encode()))


def dumps(payload: dict[str, Any]) -> bytes:
    """CBOR as written by cbor2: keys in the order given, floats as 64 bits, integers as short as they fit."""
    return cbor2.dumps(payload)
