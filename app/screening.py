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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from numpy.lib import format as npformat

from app.metadata import EvaluateProcessMetadata, MetadataError, TrainProcessMetadata, from_content

MAX_TEXT_CHARS = 200  # of any client-supplied string that reaches a log line
NUMPY_STYPE = "numpy.ndarray"  # the one array encoding accepted (Flower's Array.from_numpy_ndarray)
T = TypeVar("T")


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


class GlobalModel(Mapping[str, np.ndarray]):
    """The global model's arrays (read-only), with what judging a reply against them needs.

    Built once per round (`decode_global`): the .npy header each array would have, the
    declared dtype string, the model as one float64 vector; so that judging each reply
    takes lookups, not the same work again.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)
        self.names = list(self._arrays)
        self.headers = {name: _npy_header(array) for name, array in self._arrays.items()}
        self.dtype_names = {name: str(array.dtype) for name, array in self._arrays.items()}

    @cached_property
    def flat(self) -> np.ndarray:  # on first use: a model that is no vector of numbers fails where it did
        return _flat(self._arrays.values())

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


def decode_global(arrays: ArrayRecord) -> GlobalModel:
    """The global model's arrays, decoded once per round to judge every reply against."""
    decoded = {name: array.numpy() for name, array in arrays.items()}
    for value in decoded.values():
        value.flags.writeable = False  # GlobalModel's headers and vector must stay true to them
    return GlobalModel(decoded)


def screen_train(
    content: RecordDict,
    global_arrays: Mapping[str, np.ndarray],
    *,
    expected_metrics: Iterable[str],
    weight_key: str,
    max_examples: int,
) -> Screened:
    model = global_arrays if isinstance(global_arrays, GlobalModel) else GlobalModel(global_arrays)
    metrics = _check_metrics(content, expected_metrics, weight_key, max_examples)
    norm, distance = _norms(_decode_arrays(content, model), model)  # the NaN check of float arrays is in `_norms`
    return Screened(_metadata(content, TrainProcessMetadata), metrics, update_norm=norm, update_distance=distance)


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
    records = _records(content, MetricRecord)
    if len(records) != 1:
        raise Rejected("bad_records", f"expected one MetricRecord, got {len(records)}")
    metrics = dict(records[0])
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


def _decode_arrays(content: RecordDict, model: GlobalModel) -> dict[str, np.ndarray]:
    records = _records(content, ArrayRecord)
    if len(records) != 1:
        raise Rejected("bad_records", f"expected one ArrayRecord, got {len(records)}")
    record = records[0]
    if list(record.keys()) != model.names:
        raise Rejected("array_names", "array names or their order differ from the global model's "
                                      f"({bounded(list(record.keys()))})")
    decoded = {}
    for name, array in record.items():
        expected = model[name]
        if array.stype != NUMPY_STYPE:
            raise Rejected("array_encoding", f"array {name!r} is encoded as {bounded(array.stype)}, "
                                             f"expected {NUMPY_STYPE}")
        value = _as_expected(array.data, model.headers[name], expected)
        if value is None:
            value = _load(name, array.data)
        declared = (array.dtype, tuple(array.shape))
        if value.dtype != expected.dtype or declared[0] != model.dtype_names[name]:
            raise Rejected("array_dtype", f"array {name!r} is {bounded(declared[0])} (declared) / {value.dtype} "
                                          f"(real), expected {expected.dtype}")
        if value.shape != expected.shape or declared[1] != expected.shape:
            raise Rejected("array_shape", f"array {name!r} is {bounded(list(declared[1]))} (declared) / "
                                          f"{list(value.shape)} (real), expected {list(expected.shape)}")
        # Integers are always finite; real floats are checked all at once, by `_norms`.
        if value.dtype.kind not in "biuf" and not np.isfinite(value).all():
            raise Rejected("array_nonfinite", f"array {name!r} holds NaN or infinite values")
        decoded[name] = value
    return decoded


def _as_expected(data: bytes, header: bytes | None, expected: np.ndarray) -> np.ndarray | None:
    """The array, if `data` is exactly what np.save writes for `expected`'s dtype and shape; else None.

    np.load parses each header with ast.literal_eval, most of a reply's screening time.
    A header byte-for-byte equal to the one np.save writes for this dtype and shape in C
    order (the magic and the header's length are part of it) tells np.load exactly that
    dtype, shape and order, so the data can be taken as it is once its length is right.
    Anything else (another numpy's header, Fortran order, another byte order, a wrong
    length) is left to `_load`, whose errors say what is wrong.
    """
    if header is None or type(data) is not bytes or len(data) != len(header) + expected.nbytes:
        return None
    if not data.startswith(header):
        return None
    return np.frombuffer(data, expected.dtype, count=expected.size, offset=len(header)).reshape(expected.shape)


def _load(name: str, data: bytes) -> np.ndarray:
    stream = io.BytesIO(data)
    try:  # np.load refuses pickles (allow_pickle=False) and reads the real dtype and shape
        _header_fits(stream, len(data))
        value = np.load(stream, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure means undecodable bytes
        raise Rejected("array_undecodable", f"array {name!r}: {bounded(str(exc))}") from None
    if not isinstance(value, np.ndarray):
        raise Rejected("array_undecodable", f"array {name!r} holds no single array")
    if stream.tell() != len(data):  # np.load stops at the data's end: bytes after it are not the array's
        raise Rejected("array_undecodable", f"array {name!r}: {len(data) - stream.tell()} bytes after the array data")
    return value


def _header_fits(stream: io.BytesIO, size: int) -> None:
    """np.load allocates what a header declares before reading the data: refuse a
    header that declares more data than the bytes hold (a hostile 10^12 elements)."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _fortran, dtype = read_header(stream)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if dtype.hasobject or declared > size - stream.tell():
        raise ValueError(f"the header declares {declared} bytes of data, the array holds {size - stream.tell()}")
    stream.seek(0)


def _npy_header(array: np.ndarray) -> bytes | None:
    """The header np.save writes (Flower's Array encoding) before a C-ordered array like `array`.

    None (so every reply's array goes through np.load) for anything but plain numbers,
    and for headers that need a format version other than 1.0.
    """
    if array.dtype.kind not in "biufc":
        return None
    header = {"descr": npformat.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
    buffer = io.BytesIO()
    try:
        npformat.write_array_header_1_0(buffer, header)
    except ValueError:
        return None
    return buffer.getvalue()


def _flat(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """The arrays as one new float64 vector: a few numpy calls in all, not several per array.

    Per-call overhead, not arithmetic, is what small models cost. Casting as `astype` does.
    """
    views = [array.ravel() for array in arrays]  # of C-ordered arrays: no copy before the one below
    return np.concatenate(views, dtype=np.float64, casting="unsafe") if views else np.zeros(0)


def _norms(arrays: Mapping[str, np.ndarray], model: GlobalModel) -> tuple[float, float]:
    """The update's L2 norm and L2 distance from the global model, accumulated in float64.

    A NaN or infinity anywhere makes the sum of squares non-finite, so real floats are
    checked here in one pass; an array is then named by looking at each. A sum that
    overflows with every value finite (|x| > 1e154 in float64) stays an infinite norm.
    Squares are summed by numpy's pairwise add, not `v @ v`: OpenBLAS splits a dot
    product over 10,000 values across threads, which costs more than it saves here.
    """
    values = _flat(arrays.values())  # this reply's own copy, so squared in place
    with np.errstate(over="ignore", invalid="ignore"):  # what a hostile reply may cause is judged below, not warned of
        delta = np.subtract(values, model.flat)
        norm_sq = float(np.add.reduce(np.square(values, out=values)))
        distance_sq = float(np.add.reduce(np.square(delta, out=delta)))
    if not math.isfinite(norm_sq):
        for name, value in arrays.items():
            if not np.isfinite(value).all():
                raise Rejected("array_nonfinite", f"array {name!r} holds NaN or infinite values")
    return math.sqrt(norm_sq), math.sqrt(distance_sq)


def _records(content: RecordDict, kind: type[T]) -> list[T]:
    # Not `content.array_records`: that builds a copy synced back into `content`, record by record.
    return [record for record in content.values() if isinstance(record, kind)]
