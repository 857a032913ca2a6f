"""Schema versions, declared: which fields each version holds, which it requires.

    versions=[Version(1),
              Version(2, adds=["label_counts"], required=["label_counts"]),
              Version(3, adds=["ray_node_id", "ray_node_ip"], required=["ray_node_id", "ray_node_ip"])]

A version holds the fields of the one before it plus `adds`; the first holds every field no
later version adds. A field without a default is required in every version; one with a default
may be left out (it then takes its default) unless that version lists it in `required`, which
holds for that version alone. Reading needs no code per version: a payload of version N must
hold N's required fields and nothing beyond N's fields. Writing picks the oldest version that
holds the object, so a reader that predates a field keeps reading every object without it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from flowerdock.compile import DeclarationError
from flowerdock.errors import MessageError

ENVELOPE = frozenset({"kind", "version"})  # the keys every payload holds besides its fields


@dataclass(frozen=True)
class Version:
    """One schema version: its number, the fields it adds, the defaulted fields it requires."""

    number: int
    adds: Sequence[str] = ()
    required: Sequence[str] = ()


@dataclass(frozen=True)
class Layout:
    """What a payload of one version holds: the keys it may hold and those it must."""

    number: int
    fields: frozenset[str]
    required: frozenset[str]
    allowed_keys: frozenset[str]  # fields and envelope
    required_keys: frozenset[str]

    def key_error(self, keys: Collection[object]) -> MessageError | None:
        """None if a payload's keys fit this version, else which are unknown (first) or missing."""
        if keys == self.required_keys or self.required_keys <= keys <= self.allowed_keys:
            return None
        unknown = sorted(f"{key!s:.64}" for key in keys - self.allowed_keys)
        if unknown:  # a few of them, each cut short: the names are the sender's
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            return MessageError(f"unknown field(s): {', '.join(unknown[:10])}{more}")
        return MessageError(f"missing field(s): {', '.join(sorted(self.required_keys - keys))}")


def layouts(versions: Sequence[Version], fields: Sequence[str], defaulted: Collection[str]) -> dict[int, Layout]:
    """Every declared version's layout, by number, checked for sense."""
    versions = list(versions) or [Version(1)]
    numbers = [version.number for version in versions]
    if numbers != sorted(set(numbers)) or numbers[0] < 1:
        raise DeclarationError(f"versions must be numbered upwards from 1 or more, got {numbers}")
    added_later = {name for version in versions[1:] for name in version.adds}
    _check_names(versions, fields, defaulted, added_later)
    held = {name for name in fields if name not in added_later}
    always = frozenset(name for name in fields if name not in defaulted)
    table = {}
    for index, version in enumerate(versions):
        held |= set(version.adds) if index else set()
        required = always | frozenset(version.required)
        table[version.number] = Layout(version.number, frozenset(held), required, frozenset(held) | ENVELOPE,
                                       required | ENVELOPE)
    return table


def _check_names(versions: Sequence[Version], fields: Sequence[str], defaulted: Collection[str],
                 added_later: set[str]) -> None:
    for version in versions:
        for name in (*version.adds, *version.required):
            if name not in fields:
                raise DeclarationError(f"version {version.number} names '{name}', which is not a field")
    if undefaulted := sorted(added_later - set(defaulted)):
        raise DeclarationError(f"a field added by a later version needs a default (older payloads lack it): "
                               f"{', '.join(undefaulted)}")
    if versions[0].adds:
        raise DeclarationError("the first version holds every field no later version adds: give it no `adds`")


def oldest_holding(table: dict[int, Layout], present: frozenset[str]) -> Layout:
    """The oldest version that holds every field set and requires none that is not."""
    for layout in table.values():
        if present <= layout.fields and layout.required <= present:
            return layout
    raise MessageError(f"no declared version holds these fields together: {', '.join(sorted(present))}")
