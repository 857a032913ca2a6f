"""Declare a message type once; encode and decode it from that declaration alone.

    @message(kind="train", versions=[Version(1), Version(2, adds=["label_counts"])])
    class TrainProcessMetadata:
        training_time: Annotated[float, Range(0, 7 * 24 * 3600, unit="seconds")]
        converged: bool
        training_losses: Annotated[dict[Key, float], Size(max=1000)]
        label_counts: Annotated[dict[Key, Annotated[int, Range(0, 10**9)]], Size(max=1000)] | None = None

    data = encode(meta)                          # CBOR bytes, deterministic
    meta = decode(data, TrainProcessMetadata)    # or MessageError naming the field and the reason

The class becomes a frozen dataclass whose constructor checks every field. A payload is a CBOR
map: "kind", "version" and the fields, keys in canonical order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flowerdock import cbor_wire
from flowerdock.errors import MessageError, cbor_type
from flowerdock.schema import DEFAULT_MAX_BYTES, Spec, build_spec, check_object, check_together_keys
from flowerdock.versions import ENVELOPE, Layout, Version, oldest_holding

T = TypeVar("T")
_SPEC = "__flowerdock_spec__"
_new, _set = object.__new__, object.__setattr__


def message(*, kind: str, versions: Sequence[Version] = (), record: str | None = None,
            together: Sequence[Sequence[str]] = (), max_bytes: int = DEFAULT_MAX_BYTES,
            max_depth: int | None = None) -> Any:
    """Make a class a message type: a frozen, slotted dataclass checked on construction.

    kind       the name every payload carries, so that one type is never read as another
    versions   its schema versions (flowerdock.versions); by default one, version 1
    record     the ConfigRecord name that carries it in a Message (default: kind)
    together   groups of `T | None` fields that are set all together or not at all
    max_bytes  the largest payload decoded; max_depth the deepest nesting (default: declared + 1)

    A `__post_init__` of the class's own runs after the declared checks, on construction and on
    decode: a rule across fields. It should raise MessageError.
    """
    def declare(cls: type[T]) -> type[T]:
        own_check = cls.__dict__.get("__post_init__")  # a rule of the class's own runs after the declared ones
        cls.__post_init__ = _post_init if own_check is None else _then(own_check)  # type: ignore[attr-defined]
        declared = dataclass(frozen=True, slots=True)(cls)
        spec = build_spec(declared, kind, record, versions, together, max_bytes, max_depth)
        setattr(declared, _SPEC, dataclasses.replace(spec, own_check=own_check))
        return declared
    return declare


def _post_init(self: Any) -> None:
    check_object(spec_of(type(self)), self)


def _then(own_check: Any) -> Any:
    def post_init(self: Any) -> None:
        _post_init(self)
        own_check(self)
    return post_init


def spec_of(cls: type) -> Spec:
    spec = cls.__dict__.get(_SPEC) if isinstance(cls, type) else None
    if spec is None:
        raise MessageError(f"{getattr(cls, '__name__', cls)!s} is not a declared message type")
    return spec


def encode(obj: Any) -> bytes:
    """CBOR bytes for a declared object: the oldest version that holds it, canonical key order."""
    spec = spec_of(type(obj))
    values = {}
    for name, required, default, factory, to_wire in spec.encode_plan:
        value = getattr(obj, name)
        # A defaulted field that holds its default is left out: absence is how it travels.
        if required or value != (default if factory is None else factory()):
            values[name] = value if to_wire is None else to_wire(value)
    number, order = _written_layout(spec, frozenset(values))
    values["kind"], values["version"] = spec.kind, number
    data = cbor_wire.dumps({name: values[name] for name in order})
    if len(data) > spec.max_bytes:
        raise MessageError(f"encoded {spec.kind} message is {len(data)} bytes, over the {spec.max_bytes}-byte cap")
    return data


def _written_layout(spec: Spec, written: frozenset[str]) -> tuple[int, list[str]]:
    """The version and key order for this set of fields, computed once per set (a few per type)."""
    found = spec.write_cache.get(written)
    if found is None:
        layout = oldest_holding(spec.layouts, written)
        order = [name for name in spec.key_orders[layout.number] if name in written or name in ENVELOPE]
        found = spec.write_cache[written] = (layout.number, order)
    return found


def decode(data: bytes, cls: type[T], *, versions: Collection[int] | None = None) -> T:
    """Parse untrusted bytes into an object of `cls`, or raise MessageError.

    `versions` narrows the versions this reader accepts (a server that must not read newer ones)."""
    spec = spec_of(cls)
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray)):
            raise MessageError(f"payload must be bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > spec.max_bytes:  # before a single byte is decoded
        raise MessageError(f"payload is {len(data)} bytes, over the {spec.max_bytes}-byte cap")
    payload = cbor_wire.parse(data, spec.max_depth)
    if type(payload) is not dict:
        raise MessageError(f"payload must be a CBOR map, got {cbor_type(payload)}")
    layout = _layout(spec, payload.get("version"), versions)
    if payload.get("kind") != spec.kind:
        raise MessageError(f"expected kind '{spec.kind}', got {payload.get('kind')!r:.80}")
    if error := layout.key_error(payload.keys()):
        raise error
    return _build(spec, payload)


def _layout(spec: Spec, version: Any, versions: Collection[int] | None) -> Layout:
    if type(version) is not int:
        raise MessageError("payload has no integer 'version' field")
    layout = spec.layouts.get(version)
    if layout is None or (versions is not None and version not in versions):
        known = [number for number in spec.layouts if versions is None or number in versions]
        raise MessageError(f"unsupported schema version {version} (this reader knows {', '.join(map(str, known))})")
    return layout


def _build(spec: Spec, payload: dict[str, Any]) -> Any:
    """Check each field the payload holds, then build the object without __init__ (it would check again)."""
    if spec.together:
        check_together_keys(spec, payload.keys())
    obj = _new(spec.cls)
    for name, valid, explain, default, factory in spec.wire_plan:
        value = payload.get(name, _ABSENT)
        if value is _ABSENT:  # a version that lacks it, or an optional field left out
            value = default if factory is None else factory()
        elif not valid(value):
            raise explain(value, name)
        _set(obj, name, value)
    if spec.own_check is not None:  # the class's own rule, as its constructor runs it
        _run_own_check(spec, obj)
    return obj


def _run_own_check(spec: Spec, obj: Any) -> None:
    # Whatever the rule raises, decode raises only MessageError: a caller catches one type.
    try:
        spec.own_check(obj)
    except MessageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the class's code, on the sender's values
        raise MessageError(f"{spec.kind} refused by its own rule: {type(exc).__name__}: {exc!s:.200}") from None


_ABSENT = object()
