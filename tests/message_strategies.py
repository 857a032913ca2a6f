"""Hypothesis strategies generated from a flowerdock declaration: valid objects of any declared type.

Each field's strategy follows its type and bounds (ranges, lengths, allowed keys, patterns); a
text with a `check` of its own (say, an IP address) needs one given by name in `overrides`.
Fields declared `together` are drawn all set or all None.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, get_args, get_origin

from hypothesis import strategies as st

from flowerdock.bounds import Range, Size, Text
from flowerdock.compile import split_annotated, split_optional
from flowerdock.messages import spec_of
from flowerdock.scalars import FLOAT_RANGE, INT_RANGE

PRINTABLE = st.characters(categories=["L", "N", "P", "S", "Zs"])


def objects(cls: type, **overrides: st.SearchStrategy) -> st.SearchStrategy:
    """Valid instances of a declared class."""
    spec = spec_of(cls)
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for field in spec.fields:
        bare, optional = split_optional(hints[field.name])
        value = overrides[field.name] if field.name in overrides else values(bare)
        fields[field.name] = st.none() | value if optional and not _in_group(spec, field.name) else value
    return st.builds(lambda drawn, sets: cls(**_apply_groups(spec, drawn, sets)),
                     st.fixed_dictionaries(fields), st.lists(st.booleans(), min_size=len(spec.together),
                                                              max_size=len(spec.together)))


def _in_group(spec: Any, name: str) -> bool:
    return any(name in group for group in spec.together)


def _apply_groups(spec: Any, drawn: dict[str, Any], sets: list[bool]) -> dict[str, Any]:
    for group, is_set in zip(spec.together, sets):
        if not is_set:
            drawn.update(dict.fromkeys(group))
    return drawn


def values(hint: Any) -> st.SearchStrategy:
    """Valid values of one declared type."""
    base, bounds = split_annotated(hint)
    origin = get_origin(base)
    if base is bool:
        return st.booleans()
    if base is int:
        bound = bounds.get(Range, INT_RANGE)
        return st.integers(int(bound.low), int(bound.high))
    if base is float:
        bound = bounds.get(Range, FLOAT_RANGE)
        return st.floats(bound.low, bound.high, allow_nan=False, allow_infinity=False) | \
            st.integers(int(max(bound.low, -2**53)), int(min(bound.high, 2**53)))  # an encoder may send 2 for 2.0
    if base is str:
        return texts(bounds.get(Text, Text()))
    if base is bytes:
        size = bounds[Size]
        return st.binary(min_size=size.min, max_size=size.max)
    if origin is Literal:
        return st.sampled_from(get_args(base))
    if origin is list:
        size = bounds[Size]
        return st.lists(values(get_args(base)[0]), min_size=size.min, max_size=min(size.max, 20))
    if origin is dict:
        key, value = get_args(base)
        size = bounds[Size]
        return st.dictionaries(values(key), values(value), min_size=size.min, max_size=min(size.max, 20))
    raise TypeError(f"no strategy for {hint!r}")


def texts(rule: Text) -> st.SearchStrategy:
    if rule.check is not None:
        raise TypeError("a text with a check of its own needs an override")
    if rule.pattern:
        return st.from_regex(rule.pattern, fullmatch=True).filter(lambda text: rule.min <= len(text) <= rule.max)
    alphabet = PRINTABLE if rule.printable else st.characters()
    return st.text(alphabet, min_size=rule.min, max_size=rule.max).filter(
        lambda text: not rule.printable or text.isprintable())
