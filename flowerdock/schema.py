"""A declared class, compiled once: its fields' rules, defaults and version layouts."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flowerdock.cbor_wire import canonical_order
from flowerdock.compile import DeclarationError, compile_hint, split_optional
from flowerdock.errors import MessageError
from flowerdock.rule import Rule
from flowerdock.versions import ENVELOPE, Layout, Version, layouts

DEFAULT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class FieldSpec:
    name: str
    wire: Rule  # for what cbor2 built: exact str keys are a given
    local: Rule  # for what a constructor was given: str subclasses are refused too
    optional: bool  # `T | None`: None is its absence, never written
    default: Any  # dataclasses.MISSING when required
    make_default: Callable[[], Any] | None


@dataclass(frozen=True)
class Spec:
    cls: type
    kind: str
    record: str
    fields: tuple[FieldSpec, ...]
    layouts: dict[int, Layout]
    together: tuple[frozenset[str], ...]
    max_bytes: int
    max_depth: int
    key_orders: dict[int, list[str]]  # by version: the payload's keys in canonical order
    # The fields as flat tuples, for the per-call loops: attribute lookups cost more than the checks.
    wire_plan: tuple[tuple[str, Any, Any, Any, Any], ...] = ()  # name, valid, explain, default, default factory
    local_plan: tuple[tuple[str, Any, Any, bool], ...] = ()  # name, valid, explain, optional
    encode_plan: tuple[tuple[str, bool, Any, Any, Any], ...] = ()  # name, required, default, factory, to_wire
    write_cache: dict[frozenset[str], tuple[int, list[str]]] = dataclasses.field(default_factory=dict)
    own_check: Callable[[Any], None] | None = None  # the class's own __post_init__: a rule across fields


def build_spec(cls: type, kind: str, record: str | None, versions: Sequence[Version],
               together: Sequence[Sequence[str]], max_bytes: int, max_depth: int | None) -> Spec:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = tuple(_field(cls.__qualname__, field, hints[field.name]) for field in dataclasses.fields(cls))
    names = [field.name for field in fields]
    if clash := ENVELOPE & set(names):
        raise DeclarationError(f"{cls.__qualname__}: {', '.join(sorted(clash))} is the envelope's, not a field name")
    groups = tuple(frozenset(group) for group in together)
    for group in groups:
        if not group <= {field.name for field in fields if field.optional}:
            raise DeclarationError(f"{cls.__qualname__}: `together` names fields that are not `T | None`: {group}")
    defaulted = [field.name for field in fields if field.make_default is not None]
    # One level more than declared: a map sent where a number belongs is then refused by
    # name ("x must be a number, got map"), not by the bare depth cap.
    depth = max_depth or 2 + max((field.wire.depth for field in fields), default=0)
    table = layouts(versions, names, defaulted)
    orders = {number: canonical_order([*layout.allowed_keys]) for number, layout in table.items()}
    wire_plan = tuple((f.name, f.wire.valid, f.wire.explain, f.default,
                       None if f.default is not dataclasses.MISSING else f.make_default) for f in fields)
    local_plan = tuple((f.name, f.local.valid, f.local.explain, f.optional) for f in fields)
    encode_plan = tuple((f.name, f.make_default is None, f.default,
                         None if f.default is not dataclasses.MISSING else f.make_default, f.wire.to_wire)
                        for f in fields)
    return Spec(cls, kind, record or kind, fields, table, groups, max_bytes, depth, orders, wire_plan, local_plan,
                encode_plan)


def _field(owner: str, field: dataclasses.Field, hint: Any) -> FieldSpec:
    where = f"{owner}.{field.name}"
    bare, optional = split_optional(hint)
    if field.default is not dataclasses.MISSING:
        make_default = (lambda value=field.default: value)
    elif field.default_factory is not dataclasses.MISSING:
        make_default = field.default_factory
    else:
        make_default = None
    if optional and (make_default is None or make_default() is not None):
        raise DeclarationError(f"{where}: a `T | None` field is left out when None: declare it `= None`")
    return FieldSpec(field.name, compile_hint(bare, where, from_wire=True), compile_hint(bare, where, from_wire=False),
                     optional, field.default, make_default)


def check_object(spec: Spec, obj: Any) -> None:
    """Every field of an object built in Python, in declaration order; raises MessageError."""
    forced = _forced(spec, obj) if spec.together else ()
    for name, valid, explain, optional in spec.local_plan:
        value = getattr(obj, name)
        if value is None and optional and name not in forced:
            continue
        if not valid(value):
            raise explain(value, name)


def _forced(spec: Spec, obj: Any) -> set[str]:
    """The fields that must be set because another of their `together` group is."""
    return {name for group in spec.together if any(getattr(obj, other) is not None for other in group)
            for name in group}


def check_together_keys(spec: Spec, keys: Any) -> None:
    """A payload holds all of a `together` group's fields or none (an absent field is None)."""
    for group in spec.together:
        sent = group & keys
        if sent and sent != group:
            raise MessageError(f"{', '.join(sorted(group - sent))} must be sent with {', '.join(sorted(sent))}")
