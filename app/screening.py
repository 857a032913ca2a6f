"""Screening one reply before it may reach an aggregator.

A reply comes from another organisation's machine: buggy, or hostile. Flower
aggregates what a reply *declares* (an array's dtype and shape are fields next to
its bytes, never compared with them) and trusts the example count it is given.
So every check here looks at what the bytes really hold:

  arrays    decoded with numpy (never a pickle); the same names, encoding, real
            shape and dtype as the global model; every value finite;
  metrics   exactly the expected keys, each a finite number (no lists, no NaN);
  examples  the weight key is an integer in [1, max_examples];
  metadata  the CBOR payload (app/metadata.py), which treats every byte as hostile.

A failed check raises `Rejected` with a machine-readable `reason` (logged as the
`client_round` line's `reason`) and a human `detail`. Client-supplied text is
bounded with `bounded()` before it is ever logged.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from app.metadata import EvaluateProcessMetadata, MetadataError, TrainProcessMetadata, from_content

MAX_TEXT_CHARS = 200  # of any client-supplied string that reaches a log line
NUMPY_STYPE = "numpy.ndarray"  # the one array encoding accepted (Flower's Array.from_numpy_ndarray)


class Rejected(Exception):
    """A reply that must not be aggregated: `reason` is a code, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Screened:
    """What a reply that passed screening amounts to."""

    meta: TrainProcessMetadata | EvaluateProcessMetadata
    metrics: dict[str, float | int]
    update_norm: float | None = None  # L2 norm of the returned model (train only)
    update_distance: float | None = None  # L2 distance from the global model sent (train only)


def bounded(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """Client-supplied text, made printable and cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def decode_global(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """The global model's arrays, decoded once per round to judge every reply against."""
    return {name: array.numpy() for name, array in arrays.items()}


def screen_train(
    content: RecordDict,
    global_arrays: Mapping[str, np.ndarray],
    *,
    expected_metrics: Iterable[str],
    weight_key: str,
    max_examples: int,
) -> Screened:
    metrics = _check_metrics(content, expected_metrics, weight_key, max_examples)
    arrays = _decode_arrays(content, global_arrays)
    meta = _metadata(content, TrainProcessMetadata)
    norm_sq = distance_sq = 0.0
    for name, array in arrays.items():
        values = array.astype(np.float64, copy=False).ravel()
        norm_sq += float(values @ values)
        delta = values - global_arrays[name].astype(np.float64, copy=False).ravel()
        distance_sq += float(delta @ delta)
    return Screened(meta, metrics, update_norm=math.sqrt(norm_sq), update_distance=math.sqrt(distance_sq))


def screen_evaluate(
    content: RecordDict, *, expected_metrics: Iterable[str], weight_key: str, max_examples: int
) -> Screened:
    metrics = _check_metrics(content, expected_metrics, weight_key, max_examples)
    return Screened(_metadata(content, EvaluateProcessMetadata), metrics)


# --- the checks ---------------------------------------------------------------------


def _metadata(content: RecordDict, kind: type) -> Any:
    try:
        return from_content(content, kind)
    except MetadataError as exc:
        raise Rejected("bad_metadata", bounded(str(exc))) from None


def _check_metrics(
    content: RecordDict, expected_metrics: Iterable[str], weight_key: str, max_examples: int
) -> dict[str, float | int]:
    records = content.metric_records
    if len(records) != 1:
        raise Rejected("bad_records", f"expected one MetricRecord, got {len(records)}")
    metrics = dict(next(iter(records.values())))
    expected = set(expected_metrics) | {weight_key}
    if set(metrics) != expected:
        unknown, missing = sorted(set(metrics) - expected), sorted(expected - set(metrics))
        raise Rejected("bad_metrics", f"metric keys differ: unknown {bounded(unknown)}, missing {missing}")
    for key, value in metrics.items():
        if type(value) not in (int, float) or not math.isfinite(value):
            raise Rejected("bad_metrics", f"metric {key!r} must be a finite number, got {bounded(value)}")
    examples = metrics[weight_key]
    if type(examples) is not int and not (type(examples) is float and examples.is_integer()):
        raise Rejected("bad_example_count", f"{weight_key!r} must be a whole number, got {bounded(examples)}")
    if not 1 <= examples <= max_examples:
        raise Rejected("bad_example_count", f"{weight_key!r} must be in [1, {max_examples}], got {bounded(examples)}")
    return metrics


def _decode_arrays(content: RecordDict, global_arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    records = content.array_records
    if len(records) != 1:
        raise Rejected("bad_records", f"expected one ArrayRecord, got {len(records)}")
    record = next(iter(records.values()))
    if list(record.keys()) != list(global_arrays):
        raise Rejected("array_names", "array names or their order differ from the global model's "
                                      f"({bounded(list(record.keys()))})")
    decoded = {}
    for name, array in record.items():
        expected = global_arrays[name]
        if array.stype != NUMPY_STYPE:
            raise Rejected("array_encoding", f"array {name!r} is encoded as {bounded(array.stype)}, "
                                             f"expected {NUMPY_STYPE}")
        try:  # np.load refuses pickles (allow_pickle=False) and reads the real dtype and shape
            value = np.load(io.BytesIO(array.data), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any failure means undecodable bytes
            raise Rejected("array_undecodable", f"array {name!r}: {bounded(str(exc))}") from None
        if not isinstance(value, np.ndarray):
            raise Rejected("array_undecodable", f"array {name!r} holds no single array")
        declared = (array.dtype, tuple(array.shape))
        if value.dtype != expected.dtype or declared[0] != str(expected.dtype):
            raise Rejected("array_dtype", f"array {name!r} is {bounded(declared[0])} (declared) / {value.dtype} "
                                          f"(real), expected {expected.dtype}")
        if value.shape != expected.shape or declared[1] != expected.shape:
            raise Rejected("array_shape", f"array {name!r} is {bounded(list(declared[1]))} (declared) / "
                                          f"{list(value.shape)} (real), expected {list(expected.shape)}")
        if not np.isfinite(value).all():
            raise Rejected("array_nonfinite", f"array {name!r} holds NaN or infinite values")
        decoded[name] = value
    return decoded
