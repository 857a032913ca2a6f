"""What a ClientApp reports about its training, and the CBOR codec that carries it.

The Flower tutorial sends this object with `pickle`, which runs arbitrary code on
load. Here the bytes come from other organisations' machines, so `decode` treats
every payload as hostile: it caps the size before decoding and the nesting depth
while decoding, refuses every CBOR semantic tag as soon as its number is read (no
object is ever built from a tag), and then checks a strict schema: exact field
names and types, finite numbers, sane sizes, and a schema version so that a newer
server can still read an older client.

Version 2 adds `label_counts` to train metadata: privacy-sensitive, sent only when a
site's operator opts in (node config `share-label-counts`). Without it, metadata is
still written as version 1, byte for byte, so v1-only servers keep reading those sites.

Version 3 adds `ray_node_id` and `ray_node_ip` to both kinds: which Ray node ran the
ClientApp, written only in Flower's simulation runtime (Ray), where server and clients
are one run's code. A deployment's replies carry neither and stay version 1 or 2, byte
for byte. In version 3, `label_counts` is optional: a version-3 reply holds it only
when the site opted in.

Public API: `encode(meta) -> bytes`, `decode(data, kind) -> meta`, `MetadataError`,
and `to_config_record` / `from_content` for carrying it in a Message.
"""

from __future__ import annotations

import io
import ipaddress
import re
import threading
from dataclasses import dataclass, fields
from math import isfinite
from typing import Any, TypeVar

import cbor2
from flwr.app import ConfigRecord, RecordDict

__all__ = ["EvaluateProcessMetadata", "MetadataError", "SCHEMA_VERSION", "TrainProcessMetadata", "decode", "encode",
           "from_content", "to_config_record"]

# The newest version written. When a field changes, bump this, keep a reader for
# every older version in `_READERS`, and old clients keep working.
SCHEMA_VERSION = 3

# Limits. A legitimate payload is a few hundred bytes; these leave ample room
# while bounding the work an attacker can cause.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 3  # the payload map, and one map inside it (training_losses, label_counts)
MAX_EPOCHS = 1_000  # entries in training_losses
MAX_LABELS = 1_000  # entries in label_counts
MAX_LABEL_COUNT = 10**9  # examples of one label at one site
MAX_KEY_CHARS = 64
MAX_SECONDS = 7 * 24 * 3600.0  # a week: longer than any round timeout
MAX_RAY_NODE_ID_CHARS = 64  # Ray's node IDs: 28 bytes, 56 hex digits
RAY_NODE_ID = re.compile(rf"[0-9a-f]{{1,{MAX_RAY_NODE_ID_CHARS}}}")


class MetadataError(ValueError):
    """A metadata payload or object is invalid; the message says why."""


@dataclass(frozen=True, slots=True)
class TrainProcessMetadata:
    """How a ClientApp's local training went."""

    training_time: float  # seconds
    converged: bool
    training_losses: dict[str, float]  # e.g. {"epoch_1": 0.56, "epoch_2": 0.34}
    # Training examples per label name, e.g. {"0": 512, "malignant": 40}: opt-in, else None. Set: version 2.
    label_counts: dict[str, int] | None = None
    # The Ray node that ran the ClientApp (simulation runtime only), else None. Set: version 3.
    ray_node_id: str | None = None
    ray_node_ip: str | None = None

    KIND = "train"

    def __post_init__(self) -> None:
        _check_train(self.training_time, self.converged, self.training_losses)
        if self.label_counts is not None:
            _check_label_counts(self.label_counts)
        _check_ray_node(self.ray_node_id, self.ray_node_ip, optional=True)


@dataclass(frozen=True, slots=True)
class EvaluateProcessMetadata:
    """How a ClientApp's local evaluation went."""

    evaluation_time: float  # seconds
    # The Ray node that ran the ClientApp (simulation runtime only), else None. Set: version 3.
    ray_node_id: str | None = None
    ray_node_ip: str | None = None

    KIND = "evaluate"

    def __post_init__(self) -> None:
        _check_seconds("evaluation_time", self.evaluation_time)
        _check_ray_node(self.ray_node_id, self.ray_node_ip, optional=True)


Metadata = TrainProcessMetadata | EvaluateProcessMetadata
M = TypeVar("M", TrainProcessMetadata, EvaluateProcessMetadata)
V = TypeVar("V")
PAYLOAD_KEY = "meta"  # the ConfigRecord entry that holds the encoded payload
RECORD_NAMES = {TrainProcessMetadata: "train_metadata", EvaluateProcessMetadata: "evaluate_metadata"}


def encode(meta: Metadata) -> bytes:
    """Serialise metadata to CBOR, deterministically: canonical key order, 64-bit floats."""
    # Keys in canonical order by hand (shorter first): cbor2's canonical=True sorts slowly.
    # The oldest version that holds the object: without label_counts that is version 1.
    if isinstance(meta, (TrainProcessMetadata, EvaluateProcessMetadata)) and meta.ray_node_id is not None:
        payload = _payload_v3(meta)
    elif isinstance(meta, TrainProcessMetadata) and meta.label_counts is None:
        payload = {"kind": meta.KIND, "version": 1, "converged": meta.converged,
                   "training_time": meta.training_time, "training_losses": _canonical(meta.training_losses)}
    elif isinstance(meta, TrainProcessMetadata):
        payload = {"kind": meta.KIND, "version": 2, "converged": meta.converged,
                   "label_counts": _canonical(meta.label_counts), "training_time": meta.training_time,
                   "training_losses": _canonical(meta.training_losses)}
    elif isinstance(meta, EvaluateProcessMetadata):
        payload = {"kind": meta.KIND, "version": 1, "evaluation_time": meta.evaluation_time}
    else:
        raise MetadataError(f"cannot encode {type(meta).__name__}: not a metadata type")
    data = cbor2.dumps(payload)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MetadataError(f"encoded metadata is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte cap")
    return data


def _payload_v3(meta: Metadata) -> dict[str, Any]:
    ray = {"ray_node_id": meta.ray_node_id, "ray_node_ip": meta.ray_node_ip}  # 11 characters: before label_counts
    if isinstance(meta, EvaluateProcessMetadata):
        return {"kind": meta.KIND, "version": 3, **ray, "evaluation_time": meta.evaluation_time}
    counts = {} if meta.label_counts is None else {"label_counts": _canonical(meta.label_counts)}
    return {"kind": meta.KIND, "version": 3, "converged": meta.converged, **ray, **counts,
            "training_time": meta.training_time, "training_losses": _canonical(meta.training_losses)}


def _canonical(entries: dict[str, V]) -> dict[str, V]:
    # Canonical CBOR order: shorter UTF-8 key first, then bytewise. UTF-8 keeps
    # code-point order, so str order is byte order; for ASCII len() is the UTF-8 length.
    keys = sorted(entries)
    keys.sort(key=len if "".join(keys).isascii() else lambda key: len(key.encode()))
    return entries if keys == list(entries) else {key: entries[key] for key in keys}


def decode(data: bytes, kind: type[M] = TrainProcessMetadata) -> M:
    """Parse untrusted bytes into metadata of `kind`, or raise MetadataError."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray)):
            raise MetadataError(f"payload must be bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MetadataError(f"payload is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte cap")
    payload = _parse_cbor(data)
    if type(payload) is not dict:
        raise MetadataError(f"payload must be a CBOR map, got {_cbor_type(payload)}")
    version = payload.get("version")
    if type(version) is not int:
        raise MetadataError("payload has no integer 'version' field")
    reader = _READERS.get(version)
    if reader is None:
        supported = ", ".join(str(v) for v in sorted(_READERS))
        raise MetadataError(f"unsupported schema version {version} (this reader knows {supported})")
    return reader(payload, kind)


# --- CBOR parsing ---------------------------------------------------------------


class _RefuseEveryTag(dict):
    """A `semantic_decoders` table that answers every tag number with a refusal. cbor2
    decodes many tags itself (sets, regexes, shared references, big numbers, dates...)
    before `tag_hook` sees them; this table overrides all of them."""

    def __missing__(self, tag: int) -> Any:
        def refuse(_immutable: bool) -> None:
            raise MetadataError(f"CBOR tag {tag} is not allowed")
        # cbor2 calls a "shareable" decoder as soon as it reads the tag number, before
        # it decodes the tagged item: a tag costs no work, and nothing is built from it.
        return cbor2.shareable_decoder(refuse, name=f"tag {tag}")

    def __contains__(self, tag: object) -> bool:
        return True

    def get(self, tag: Any, default: Any = None) -> Any:
        return self[tag]


def _refuse_unknown_tag(*_args: Any) -> None:  # a backstop: the table above answers first
    raise MetadataError("CBOR tags are not allowed")


_DECODER_OPTIONS: dict[str, Any] = dict(
    tag_hook=_refuse_unknown_tag, semantic_decoders=_RefuseEveryTag(), max_depth=MAX_DEPTH,
    allow_indefinite=False, allow_duplicate_keys=False, strict_hashable_types=True)


class _Decoder(threading.local):
    """One decoder per thread, built once: a new one per call adds a tenth to a small decode.
    Assigning `fp` empties its read buffer: nothing of an earlier payload is read again."""

    def __init__(self) -> None:
        self.decoder = cbor2.CBORDecoder(io.BytesIO(), **_DECODER_OPTIONS)


_THREAD = _Decoder()


def _parse_cbor(data: bytes) -> Any:
    stream = io.BytesIO(data)
    decoder = _THREAD.decoder
    try:
        decoder.fp = stream
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises several types; all of them mean "bad bytes"
        if isinstance(exc.__cause__, MetadataError):  # a refused tag: say which
            raise exc.__cause__ from None
        raise MetadataError(f"not valid CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise MetadataError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value


_CBOR_TYPES = {dict: "map", list: "array", str: "text", bytes: "byte string", bool: "bool", int: "integer",
               float: "float", type(None): "null"}


def _cbor_type(value: Any) -> str:
    return _CBOR_TYPES.get(type(value)) or type(value).__name__


# --- Schema ---------------------------------------------------------------------

_LATER_KEYS = {"label_counts", "ray_node_id", "ray_node_ip"}  # fields added by versions 2 and 3
_V1_KEYS = {kind: frozenset({"version", "kind", *(f.name for f in fields(kind))}) - _LATER_KEYS
            for kind in RECORD_NAMES}
# Version 2 requires label_counts in train. Evaluate did not change: a version-2 evaluate
# payload (none is written yet) is read like version 1, as a version names the whole schema.
_V2_KEYS = _V1_KEYS | {TrainProcessMetadata: _V1_KEYS[TrainProcessMetadata] | {"label_counts"}}
_new, _set = object.__new__, object.__setattr__


def _read(payload: dict[Any, Any], kind: type[M], keys: dict[type, frozenset[str]], build: dict[type, Any],
          optional: frozenset[str] = frozenset()) -> M:
    if payload.get("kind") != kind.KIND:
        raise MetadataError(f"expected kind '{kind.KIND}', got {payload.get('kind')!r}")
    if payload.keys() != (expected := keys[kind] | (optional & payload.keys())):
        unknown, missing = sorted(str(k) for k in payload.keys() - expected), sorted(expected - payload.keys())
        raise MetadataError(f"unknown field(s): {', '.join(unknown)}" if unknown else
                            f"missing field(s): {', '.join(missing)}")
    return build[kind](payload)


# Checked once, here, then built without __init__: its __post_init__ would check again.
def _train(payload: dict[str, Any], label_counts: dict[str, int] | None,
           ray_node: tuple[str | None, str | None] = (None, None)) -> TrainProcessMetadata:
    seconds, converged, losses = payload["training_time"], payload["converged"], payload["training_losses"]
    _check_train(seconds, converged, losses, from_cbor=True)
    meta = _new(TrainProcessMetadata)
    _set(meta, "training_time", seconds)
    _set(meta, "converged", converged)
    _set(meta, "training_losses", losses)
    _set(meta, "label_counts", label_counts)
    _set(meta, "ray_node_id", ray_node[0])
    _set(meta, "ray_node_ip", ray_node[1])
    return meta


def _ray_node(payload: dict[str, Any]) -> tuple[str, str]:
    return _check_ray_node(payload["ray_node_id"], payload["ray_node_ip"])


_BUILD_V1 = {TrainProcessMetadata: lambda payload: _train(payload, None),
             EvaluateProcessMetadata: lambda payload: EvaluateProcessMetadata(payload["evaluation_time"])}
_BUILD_V2 = _BUILD_V1 | {
    TrainProcessMetadata: lambda payload: _train(payload, _check_label_counts(payload["label_counts"]))}
# Version 3: both kinds gain the Ray node; label_counts (train) becomes optional.
_V3_KEYS = {kind: keys | {"ray_node_id", "ray_node_ip"} for kind, keys in _V1_KEYS.items()}
_V3_OPTIONAL = frozenset({"label_counts"})  # only a train payload's: evaluate's keys do not include it
_BUILD_V3 = {
    TrainProcessMetadata: lambda payload: _train(
        payload, _check_label_counts(payload["label_counts"]) if "label_counts" in payload else None,
        _ray_node(payload)),
    EvaluateProcessMetadata: lambda payload: EvaluateProcessMetadata(payload["evaluation_time"],
                                                                     *_ray_node(payload))}
_READERS = {1: lambda payload, kind: _read(payload, kind, _V1_KEYS, _BUILD_V1),
            2: lambda payload, kind: _read(payload, kind, _V2_KEYS, _BUILD_V2),
            3: lambda payload, kind: _read(payload, kind, _V3_KEYS, _BUILD_V3,
                                           _V3_OPTIONAL if kind is TrainProcessMetadata else frozenset())}


def _check_train(training_time: Any, converged: Any, training_losses: Any, from_cbor: bool = False) -> None:
    _check_seconds("training_time", training_time)
    if type(converged) is not bool:
        raise MetadataError(f"converged must be bool, got {_cbor_type(converged)}")
    if type(training_losses) is not dict:
        raise MetadataError(f"training_losses must be a map, got {_cbor_type(training_losses)}")
    if len(training_losses) > MAX_EPOCHS:
        raise MetadataError(f"training_losses has {len(training_losses)} entries, over the cap of {MAX_EPOCHS}")
    if len(training_losses) < _BULK_FROM or not _losses_pass_in_bulk(training_losses, from_cbor):
        _check_each_loss(training_losses)


def _check_number(name: str, value: Any) -> float:
    # Integers are accepted as floats (other encoders may shrink 2.0 to 2); booleans are not.
    if type(value) not in (float, int):
        raise MetadataError(f"{name} must be a number, got {_cbor_type(value)}")
    if not isfinite(value):
        raise MetadataError(f"{name} must be finite, got {value}")
    return float(value)


def _check_seconds(name: str, value: Any) -> None:
    if type(value) is float and 0.0 <= value <= MAX_SECONDS:  # the common case; NaN fails it too
        return
    seconds = _check_number(name, value)
    if not 0.0 <= seconds <= MAX_SECONDS:
        raise MetadataError(f"{name} must be between 0 and {MAX_SECONDS:.0f} seconds, got {seconds}")


# Newline-joined keys, each 1-64 printable ASCII characters (str.isprintable() on ASCII).
_ASCII_KEYS = re.compile(rf"[ -~]{{1,{MAX_KEY_CHARS}}}(?:\n[ -~]{{1,{MAX_KEY_CHARS}}})*")
_BULK_FROM = 16  # entries; a shorter map is checked faster one entry at a time


def _losses_pass_in_bulk(losses: dict[Any, Any], from_cbor: bool) -> bool:
    """True only if every entry is valid (a few C-level passes); on False the loop decides."""
    keys, values = losses.keys(), losses.values()
    # cbor2 builds exact str or bytes keys only (strict_hashable_types), and join
    # refuses bytes; a map built in Python may hold str subclasses: scan for them.
    if not from_cbor and set(map(type, keys)) != {str}:
        return False
    try:
        joined = "\n".join(keys)
    except TypeError:
        return False
    # The newline count proves no key holds a newline, so the pattern sees each key whole.
    if not (joined.isascii() and joined.count("\n") == len(losses) - 1 and _ASCII_KEYS.fullmatch(joined)):
        return False
    # A sum is finite only if every term is (a finite sum that overflows just costs the loop).
    return set(map(type, values)) == {float} and isfinite(sum(values))


def _check_each_loss(losses: dict[Any, Any]) -> None:
    # A NaN or infinite loss means training diverged: such an update must not be
    # averaged into the global model, so it is refused like any other bad value.
    for key, value in losses.items():
        _check_key("training_losses", key)
        if type(value) is not float or not isfinite(value):  # a finite float needs nothing more
            _check_number(f"training_losses[{key!r}]", value)


def _check_key(name: str, key: Any) -> None:
    if type(key) is not str or not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise MetadataError(f"{name} keys must be printable text of 1-{MAX_KEY_CHARS} characters, got {key!r:.80}")


def _check_label_counts(counts: Any) -> dict[str, int]:
    if type(counts) is not dict:
        raise MetadataError(f"label_counts must be a map, got {_cbor_type(counts)}")
    if len(counts) > MAX_LABELS:
        raise MetadataError(f"label_counts has {len(counts)} entries, over the cap of {MAX_LABELS}")
    for key, count in counts.items():
        _check_key("label_counts", key)
        if type(count) is not int or not 0 <= count <= MAX_LABEL_COUNT:  # a bool is no int here
            shown = count if type(count) is int and count.bit_length() <= 64 else _cbor_type(count)
            raise MetadataError(f"label_counts[{key!r}] must be an integer from 0 to {MAX_LABEL_COUNT}, got {shown}")
    return counts


def _check_ray_node(node_id: Any, node_ip: Any, optional: bool = False) -> tuple[str, str]:
    """A Ray node ID (lowercase hex) and its IP address, both or (where optional) neither."""
    if optional and node_id is None and node_ip is None:
        return node_id, node_ip
    if type(node_id) is not str or not RAY_NODE_ID.fullmatch(node_id):
        raise MetadataError(f"ray_node_id must be 1-{MAX_RAY_NODE_ID_CHARS} lowercase hex digits, "
                            f"got {_shown(node_id)}")
    try:
        if type(node_ip) is not str or len(node_ip) > 45:  # the longest IPv6 text form
            raise ValueError
        ipaddress.ip_address(node_ip)
    except ValueError:
        raise MetadataError(f"ray_node_ip must be an IPv4 or IPv6 address, got {_shown(node_ip)}") from None
    return node_id, node_ip


def _shown(value: Any) -> str:
    return f"{value!r:.80}" if type(value) is str else _cbor_type(value)


# --- Carrying it in a Message ---------------------------------------------------------

def to_config_record(meta: Metadata) -> tuple[str, ConfigRecord]:
    """The (record name, ConfigRecord) pair a ClientApp puts in its reply."""
    return RECORD_NAMES[type(meta)], ConfigRecord({PAYLOAD_KEY: encode(meta)})


def from_content(content: RecordDict, kind: type[M]) -> M:
    """Find and decode the metadata in a reply's content, or raise MetadataError."""
    name = RECORD_NAMES[kind]
    record = content.get(name)  # not content.config_records, which first copies every ConfigRecord
    if not isinstance(record, ConfigRecord):
        raise MetadataError(f"reply has no '{name}' ConfigRecord")
    if PAYLOAD_KEY not in record:
        raise MetadataError(f"'{name}' record has no '{PAYLOAD_KEY}' entry")
    return decode(record[PAYLOAD_KEY], kind)
