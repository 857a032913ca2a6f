"""Rules for maps and lists: a size cap, then every key and entry, each error naming its path."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flowerdock.bounds import Size, Text
from flowerdock.cbor_wire import canonical
from flowerdock.errors import MessageError, cbor_type
from flowerdock.rule import Rule

BULK_FROM = 16  # entries; a shorter container is checked faster one entry at a time


def map_rule(key_test: Callable[[Any], bool], key_says: str, value: Rule, size: Size,
             bulk_keys: Callable[[Any], bool] | None) -> Rule:
    """A map of `size` entries; every key passes `key_test`, every value `value`."""

    def entries_valid(entries: dict[Any, Any]) -> bool:
        if len(entries) >= BULK_FROM and bulk_keys is not None and value.bulk is not None:
            if bulk_keys(entries.keys()) and value.bulk(entries.values()):
                return True
        # map(): the loop runs in C; which entry is bad, and why, is explain()'s to find.
        return all(map(key_test, entries)) and all(map(value.valid, entries.values()))

    def valid(entries: Any) -> bool:
        return type(entries) is dict and size.min <= len(entries) <= size.max and entries_valid(entries)

    def explain(entries: Any, path: str) -> MessageError:
        if type(entries) is not dict:
            return MessageError(f"{path} must be a map, got {cbor_type(entries)}")
        if error := _count_error(path, len(entries), size, "entries"):
            return error
        for key, item in entries.items():  # the first bad entry, in the order sent
            if not key_test(key):
                return MessageError(f"{path} keys must be {key_says}, got {key!r:.80}")
            if not value.valid(item):
                return value.explain(item, f"{path}[{key!r}]")
        raise AssertionError("explain called on a valid map")

    inner = value.to_wire
    to_wire = canonical if inner is None else (lambda entries: canonical({k: inner(v) for k, v in entries.items()}))
    return Rule(valid, explain, to_wire=to_wire, depth=1 + value.depth)


def list_rule(item: Rule, size: Size) -> Rule:
    """A list (a CBOR array) of `size` items, each passing `item`."""

    def valid(items: Any) -> bool:
        if type(items) is not list or not size.min <= len(items) <= size.max:
            return False
        if len(items) >= BULK_FROM and item.bulk is not None and item.bulk(items):
            return True
        return all(map(item.valid, items))

    def explain(items: Any, path: str) -> MessageError:
        if type(items) is not list:
            return MessageError(f"{path} must be an array, got {cbor_type(items)}")
        if error := _count_error(path, len(items), size, "items"):
            return error
        for index, entry in enumerate(items):
            if not item.valid(entry):
                return item.explain(entry, f"{path}[{index}]")
        raise AssertionError("explain called on a valid list")

    inner = item.to_wire
    to_wire = None if inner is None else (lambda items: [inner(entry) for entry in items])
    return Rule(valid, explain, to_wire=to_wire, depth=1 + item.depth)


def _count_error(path: str, count: int, size: Size, noun: str) -> MessageError | None:
    if count > size.max:
        return MessageError(f"{path} has {count} {noun}, over the cap of {size.max}")
    if count < size.min:
        return MessageError(f"{path} has {count} {noun}, under the minimum of {size.min}")
    return None


def printable_keys_in_bulk(rule: Text, from_wire: bool) -> Callable[[Any], bool] | None:
    """For keys of plain printable text: True only if every key is valid (a few C-level passes).

    On False the per-entry loop decides; None where keys have a pattern or a check of their own."""
    if rule.pattern or rule.check or not rule.printable:
        return None
    # Newline-joined keys, each of min-max printable ASCII characters (str.isprintable() on ASCII).
    one = rf"[ -~]{{{rule.min},{rule.max}}}"
    joined_keys = re.compile(rf"{one}(?:\n{one})*")

    def test(keys: Any) -> bool:
        # cbor2 builds exact str or bytes keys only (strict_hashable_types), and join refuses
        # bytes; a map built in Python may hold str subclasses: scan for them.
        if not from_wire and set(map(type, keys)) != {str}:
            return False
        try:
            joined = "\n".join(keys)
        except TypeError:
            return False
        # The newline count proves no key holds a newline, so the pattern sees each key whole.
        return joined.isascii() and joined.count("\n") == len(keys) - 1 and bool(joined_keys.fullmatch(joined))

    return test
