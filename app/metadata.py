"""What a ClientApp reports about its training, and the CBOR codec that carries it.

The Flower tutorial sends this object with `pickle`, which runs arbitrary code on
load. Here the bytes come from other organisations' machines, so `decode` treats
every payload as hostile: it caps the size before decoding and the nesting depth
while decoding, refuses every CBOR semantic tag (no object is ever built from a
tag), and then checks a strict schema: exact field names and types, finite
numbers, sane sizes, and a schema version so that a newer server can still read
an older client.

Public API: `encode(meta) -> bytes`, `decode(data, kind) -> meta`, `MetadataError`,
and `to_config_record` / `from_content` for carrying it in a Message.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import cbor2
from flwr.app import ConfigRecord, RecordDict

__all__ = [
    "EvaluateProcessMetadata",
    "MetadataError",
    "SCHEMA_VERSION",
    "TrainProcessMetadata",
    "decode",
    "encode",
    "from_content",
    "to_config_record",
]

# Version 1 is the first and only layout. When a field changes, bump this, keep
# a reader for every older version in `_READERS`, and old clients keep working.
SCHEMA_VERSION = 1

# Limits. A legitimate payload is a few hundred bytes; these leave ample room
# while bounding the work an attacker can cause.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 3  # the payload map, and one map inside it (training_losses)
MAX_EPOCHS = 1_000  # entries in training_losses
MAX_KEY_CHARS = 64
MAX_SECONDS = 7 * 24 * 3600.0  # a week: longer than any round timeout


class MetadataError(ValueError):
    """A metadata payload or object is invalid; the message says why."""


@dataclass(frozen=True, slots=True)
class TrainProcessMetadata:
    """How a ClientApp's local training went."""

    training_time: float  # seconds
    converged: bool
    training_losses: dict[str, float]  # e.g. {"epoch_1": 0.56, "epoch_2": 0.34}

    KIND = "train"

    def __post_init__(self) -> None:
        _check_seconds("training_time", self.training_time)
        _check_type("converged", self.converged, bool)
        _check_losses(self.training_losses)


@dataclass(frozen=True, slots=True)
class EvaluateProcessMetadata:
    """How a ClientApp's local evaluation went."""

    evaluation_time: float  # seconds

    KIND = "evaluate"

    def __post_init__(self) -> None:
        _check_seconds("evaluation_time", self.evaluation_time)


Metadata = TrainProcessMetadata | EvaluateProcessMetadata
M = TypeVar("M", TrainProcessMetadata, EvaluateProcessMetadata)


def encode(meta: Metadata) -> bytes:
    """Serialise metadata to CBOR (deterministic: canonical key order)."""
    if not isinstance(meta, (TrainProcessMetadata, EvaluateProcessMetadata)):
        raise MetadataError(f"cannot encode {type(meta).__name__}: not a metadata type")
    payload = {"version": SCHEMA_VERSION, "kind": meta.KIND, **asdict(meta)}
    data = cbor2.dumps(payload, canonical=True)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MetadataError(f"encoded metadata is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte cap")
    return data


def decode(data: bytes, kind: type[M] = TrainProcessMetadata) -> M:
    """Parse untrusted bytes into metadata of `kind`, or raise MetadataError."""
    if not isinstance(data, (bytes, bytearray)):
        raise MetadataError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MetadataError(f"payload is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte cap")
    payload = _parse_cbor(bytes(data))
    if not isinstance(payload, dict):
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
    """A `semantic_decoders` table that answers every tag number with a refusal.

    cbor2 decodes many tags by itself (sets, regexes, shared references, big
    numbers, dates...) before `tag_hook` ever sees them; this table overrides all
    of them, so no tag reaches an object constructor.
    """

    def __missing__(self, tag: int) -> Any:
        def refuse(_decoder: Any) -> None:  # cbor2 reports it as "error decoding semantic tag N"
            raise MetadataError(f"CBOR tag {tag} is not allowed")

        return refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def get(self, tag: Any, default: Any = None) -> Any:
        return self[tag]


def _refuse_unknown_tag(_decoder: Any, tag: Any) -> None:
    raise MetadataError(f"CBOR tag {tag.tag} is not allowed")


def _parse_cbor(data: bytes) -> Any:
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_unknown_tag,
            semantic_decoders=_RefuseEveryTag(),
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises several types; all of them mean "bad bytes"
        raise MetadataError(f"not valid CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise MetadataError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value


def _cbor_type(value: Any) -> str:
    names = {dict: "map", list: "array", str: "text", bytes: "byte string", bool: "bool", int: "integer", float: "float"}
    return names.get(type(value), type(value).__name__) if value is not None else "null"


# --- Schema ---------------------------------------------------------------------


def _read_v1(payload: dict[Any, Any], kind: type[M]) -> M:
    if payload.get("kind") != kind.KIND:
        raise MetadataError(f"expected kind '{kind.KIND}', got {payload.get('kind')!r}")
    expected = {"version", "kind"} | {f.name for f in fields(kind)}
    unknown = sorted(str(k) for k in payload.keys() - expected)
    missing = sorted(expected - payload.keys())
    if unknown:
        raise MetadataError(f"unknown field(s): {', '.join(unknown)}")
    if missing:
        raise MetadataError(f"missing field(s): {', '.join(missing)}")
    values = {f.name: payload[f.name] for f in fields(kind)}
    return kind(**values)  # __post_init__ checks every value


_READERS = {1: _read_v1}


def _check_type(name: str, value: Any, expected: type) -> None:
    if type(value) is not expected:
        raise MetadataError(f"{name} must be {expected.__name__}, got {_cbor_type(value)}")


def _check_number(name: str, value: Any) -> float:
    # Integers are accepted where a float is expected (other encoders may shrink
    # 2.0 to 2); booleans are not numbers here.
    if type(value) not in (float, int):
        raise MetadataError(f"{name} must be a number, got {_cbor_type(value)}")
    if not math.isfinite(value):
        raise MetadataError(f"{name} must be finite, got {value}")
    return float(value)


def _check_seconds(name: str, value: Any) -> None:
    seconds = _check_number(name, value)
    if not 0.0 <= seconds <= MAX_SECONDS:
        raise MetadataError(f"{name} must be between 0 and {MAX_SECONDS:.0f} seconds, got {seconds}")


def _check_losses(losses: Any) -> None:
    # A NaN or infinite loss means training diverged: such an update must not be
    # averaged into the global model, so it is refused like any other bad value.
    if type(losses) is not dict:
        raise MetadataError(f"training_losses must be a map, got {_cbor_type(losses)}")
    if len(losses) > MAX_EPOCHS:
        raise MetadataError(f"training_losses has {len(losses)} entries, over the cap of {MAX_EPOCHS}")
    for key, value in losses.items():
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
            raise MetadataError(
                f"training_losses keys must be printable text of 1-{MAX_KEY_CHARS} characters, got {key!r:.80}"
            )
        _check_number(f"training_losses[{key!r}]", value)


# --- Carrying it in a Message ---------------------------------------------------------

PAYLOAD_KEY = "meta"
RECORD_NAMES = {TrainProcessMetadata: "train_metadata", EvaluateProcessMetadata: "evaluate_metadata"}


def to_config_record(meta: Metadata) -> tuple[str, ConfigRecord]:
    """The (record name, ConfigRecord) pair a ClientApp puts in its reply."""
    return RECORD_NAMES[type(meta)], ConfigRecord({PAYLOAD_KEY: encode(meta)})


def from_content(content: RecordDict, kind: type[M]) -> M:
    """Find and decode the metadata in a reply's content, or raise MetadataError."""
    name = RECORD_NAMES[kind]
    record = content.config_records.get(name)
    if record is None:
        raise MetadataError(f"reply has no '{name}' ConfigRecord")
    if PAYLOAD_KEY not in record:
        raise MetadataError(f"'{name}' record has no '{PAYLOAD_KEY}' entry")
    return decode(record[PAYLOAD_KEY], kind)
