"""Screening against hand-built hostile replies: each rule, and what it logs."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record
from app.screening import (MAX_TEXT_CHARS, GlobalModel, Rejected, _decode_arrays, bounded, decode_global,
                           screen_evaluate, screen_train)

GLOBAL = ArrayRecord({"w": Array(np.zeros((2, 2), dtype=np.float32)), "b": Array(np.zeros(3, dtype=np.float32))})
LIMITS = {"expected_metrics": ("train_loss",), "weight_key": "num-examples", "max_examples": 1000}


def npy(value) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=True)
    return buffer.getvalue()


def content(arrays=None, metrics=None, meta=TrainProcessMetadata(1.0, False, {"epoch_1": 0.5}), **records):
    arrays = arrays if arrays is not None else {"w": Array(np.ones((2, 2), np.float32)), "b": Array(np.ones(3, np.float32))}
    items = {"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics or {"train_loss": 0.5, "num-examples": 10})}
    if meta is not None:
        name, record = to_config_record(meta)
        items[name] = record
    return RecordDict({**items, **records})


def raw(dtype: str, shape, data: bytes, stype: str = "numpy.ndarray") -> Array:
    return Array(dtype=dtype, shape=tuple(shape), stype=stype, data=data)


def rejected(reply_content, **limits) -> Rejected:
    with pytest.raises(Rejected) as caught:
        screen_train(reply_content, decode_global(GLOBAL), **{**LIMITS, **limits})
    return caught.value


def test_a_good_reply_passes_with_its_norms():
    screened = screen_train(content(), decode_global(GLOBAL), **LIMITS)
    assert screened.metrics == {"train_loss": 0.5, "num-examples": 10}
    assert screened.update_norm == pytest.approx(np.sqrt(7)) and screened.update_distance == pytest.approx(np.sqrt(7))
    assert screened.meta.training_losses == {"epoch_1": 0.5}


@pytest.mark.parametrize("value, reason", [
    (np.full((2, 2), np.nan, np.float32), "array_nonfinite"),
    (np.full((2, 2), np.inf, np.float32), "array_nonfinite"),
    (np.array([[1, 2], [3, -np.inf]], np.float32), "array_nonfinite"),
    (np.ones((2, 2), np.float64), "array_dtype"),            # declared and real float64
    (np.ones((4,), np.float32), "array_shape"),              # declared and real (4,)
    (np.ones((2, 2), ">f4"), "array_dtype"),                 # big-endian bytes
])
def test_arrays_as_declared_but_wrong(value, reason):
    assert rejected(content({"w": Array(value), "b": Array(np.ones(3, np.float32))})).reason == reason


def test_declared_shape_that_the_bytes_do_not_hold():
    # Declares (2, 2) but carries one value: Flower would broadcast it into the mean.
    liar = raw("float32", (2, 2), npy(np.ones(1, np.float32)))
    exc = rejected(content({"w": liar, "b": Array(np.ones(3, np.float32))}))
    assert exc.reason == "array_shape" and "[2, 2] (declared) / [1] (real)" in exc.detail


def test_declared_dtype_that_the_bytes_do_not_hold():
    liar = raw("float32", (2, 2), npy(np.ones((2, 2), np.float64)))
    assert rejected(content({"w": liar, "b": Array(np.ones(3, np.float32))})).reason == "array_dtype"


@pytest.mark.parametrize("array, reason", [
    (raw("float32", (2, 2), npy(np.ones((2, 2), np.float32)), stype="torch.Tensor"), "array_encoding"),
    (raw("float32", (2, 2), b"\x93NUMPY garbage"), "array_undecodable"),
    (raw("float32", (2, 2), b""), "array_undecodable"),
    (raw("float32", (2, 2), pickle.dumps(np.ones((2, 2), np.float32))), "array_undecodable"),
    (raw("object", (2, 2), npy(np.array([[1, 2], [3, 4]], dtype=object))), "array_undecodable"),  # a pickle inside
])
def test_undecodable_or_foreign_encodings(array, reason):
    assert rejected(content({"w": array, "b": Array(np.ones(3, np.float32))})).reason == reason


def test_array_names_and_record_counts():
    assert rejected(content({"w": Array(np.ones((2, 2), np.float32))})).reason == "array_names"
    swapped = {"b": Array(np.ones(3, np.float32)), "w": Array(np.ones((2, 2), np.float32))}
    assert rejected(content(swapped)).reason == "array_names"
    extra = content(extra=ArrayRecord([np.ones(3, np.float32)]))
    assert rejected(extra).reason == "bad_records"


@pytest.mark.parametrize("examples", [0, -5, 1e30, 2.5, 1001, float("nan")])
def test_example_counts_outside_the_bound(examples):
    exc = rejected(content(metrics={"train_loss": 0.5, "num-examples": examples}))
    assert exc.reason in ("bad_example_count", "bad_metrics")


def test_example_count_bound_is_configurable():
    reply = content(metrics={"train_loss": 0.5, "num-examples": 500})
    assert rejected(reply, max_examples=100).reason == "bad_example_count"
    assert screen_train(reply, decode_global(GLOBAL), **LIMITS).metrics["num-examples"] == 500
    whole_float = content(metrics={"train_loss": 0.5, "num-examples": 20.0})  # other encoders shrink ints
    assert screen_train(whole_float, decode_global(GLOBAL), **LIMITS).metrics["num-examples"] == 20.0


@pytest.mark.parametrize("metrics", [
    {"train_loss": [0.5, 0.4], "num-examples": 10},          # a list where a number belongs
    {"train_loss": float("nan"), "num-examples": 10},
    {"train_loss": float("inf"), "num-examples": 10},
    {"train_loss": 0.5, "num-examples": 10, "accuracy": 0.9},  # a key nobody asked for
    {"num-examples": 10},                                     # a key missing
    {"train_loss": 0.5},                                      # no weight
])
def test_metrics_must_be_the_expected_finite_scalars(metrics):
    assert rejected(content(metrics=metrics)).reason in ("bad_metrics",)


def test_metadata_is_checked_too():
    assert rejected(content(meta=None)).reason == "bad_metadata"
    bad = content(meta=None, train_metadata=ConfigRecord({"meta": b"\xd9\x01\x02\x80"}))  # a CBOR set
    exc = rejected(bad)
    assert exc.reason == "bad_metadata" and "tag 258" in exc.detail


def test_client_supplied_text_is_bounded_before_it_is_logged():
    key = "k" * 10_000
    exc = rejected(content(metrics={"train_loss": 0.5, "num-examples": 10, key: 1.0}))
    assert len(exc.detail) < 3 * MAX_TEXT_CHARS
    assert bounded("x" * 5000).endswith("... (5000 chars)") and len(bounded("x" * 5000)) < MAX_TEXT_CHARS + 30
    assert bounded("line\nbreak\x1b[31m") == "line\\nbreak\\x1b[31m"  # no control characters reach a log


def test_evaluate_replies_are_screened_without_arrays():
    reply = RecordDict({"metrics": MetricRecord({"eval_loss": 0.2, "eval_acc": 0.9, "num-examples": 5}),
                        **dict([to_config_record(EvaluateProcessMetadata(0.1))])})
    limits = {**LIMITS, "expected_metrics": ("eval_loss", "eval_acc")}
    assert screen_evaluate(reply, **limits).metrics["eval_acc"] == 0.9
    with pytest.raises(Rejected, match="must be in"):
        screen_evaluate(RecordDict({"metrics": MetricRecord({"eval_loss": 0.2, "eval_acc": 0.9, "num-examples": 10**9}),
                                    **dict([to_config_record(EvaluateProcessMetadata(0.1))])}), **limits)


# --- the fast path: arrays whose .npy header is the one np.save writes for the model's ----


def b_and(w) -> dict:
    return {"w": w, "b": Array(np.ones(3, np.float32))}


@pytest.mark.parametrize("value", [
    np.zeros((2, 2), np.float32), np.array(3.0), np.arange(6, dtype=np.int64).reshape(2, 3),
    np.zeros(0, np.float16), np.ones((1, 1, 1, 7), bool), np.ones(4, np.complex64), np.zeros((10**7, 3), np.uint8),
])
def test_the_expected_header_is_what_np_save_writes(value):
    header = GlobalModel({"x": value}).headers["x"]
    assert header is not None and npy(value)[:len(header)] == header and len(npy(value)) == len(header) + value.nbytes


def test_flower_encoded_arrays_are_decoded_without_np_load(monkeypatch):
    model = decode_global(GLOBAL)
    assert not any(model[name].flags.writeable for name in model)  # what the cached headers describe stays so

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called")

    monkeypatch.setattr(np, "load", no_load)
    screened = screen_train(content(), model, **LIMITS)
    assert screened.update_norm == pytest.approx(np.sqrt(7))
    fortran = np.asfortranarray(np.arange(4, dtype=np.float32).reshape(2, 2))  # another header: np.load's job
    with pytest.raises(Rejected, match="np.load called"):
        screen_train(content(b_and(Array(fortran))), model, **LIMITS)


def test_fast_path_values_are_exactly_np_loads():
    special = [-0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    values = {"w": np.array(special + [1.5] * 8, np.float32).reshape(3, 4), "n": np.array([-(2**62), 7], np.int64),
              "h": np.array(-2.5, np.float16), "z": np.zeros((0, 3), np.float32)}
    arrays = ArrayRecord({name: Array(value) for name, value in values.items()})
    decoded = _decode_arrays(RecordDict({"arrays": arrays}), decode_global(arrays))
    for name, array in arrays.items():
        loaded = array.numpy()
        assert decoded[name].dtype == loaded.dtype and decoded[name].shape == loaded.shape
        assert decoded[name].tobytes() == loaded.tobytes()


def test_the_models_header_with_the_wrong_amount_of_data():
    good = npy(np.ones((2, 2), np.float32))
    short = rejected(content(b_and(raw("float32", (2, 2), good[:-1]))))
    assert short.reason == "array_undecodable" and "declares 16 bytes of data, the array holds 15" in short.detail
    one_value_more = rejected(content(b_and(raw("float32", (2, 2), good + good[-4:]))))
    assert one_value_more.reason == "array_undecodable" and "4 bytes after the array data" in one_value_more.detail
    header_only = rejected(content(b_and(raw("float32", (2, 2), good[:-16]))))
    assert header_only.reason == "array_undecodable"


def test_a_header_declaring_more_data_than_it_carries_is_refused_before_any_allocation(monkeypatch):
    stream = io.BytesIO()  # a header for 10^6 x 10^6 float32 (4 TB) and no data
    np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    reply, model = content(b_and(raw("float32", (2, 2), stream.getvalue()))), decode_global(GLOBAL)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    with pytest.raises(Rejected) as caught:
        screen_train(reply, model, **LIMITS)
    refused = caught.value
    assert refused.reason == "array_undecodable" and "declares 4000000000000 bytes" in refused.detail


def test_trailing_bytes_are_refused_on_the_np_load_path_too():
    fortran = npy(np.asfortranarray(np.arange(4, dtype=np.float32).reshape(2, 2)))
    exc = rejected(content(b_and(raw("float32", (2, 2), fortran + b"\0"))))
    assert exc.reason == "array_undecodable" and "1 bytes after the array data" in exc.detail


def test_headers_that_differ_only_in_order_or_byte_order():
    value = np.arange(4, dtype=np.float32).reshape(2, 2)
    fortran = Array(np.asfortranarray(value))  # the same array, column by column: accepted, values intact
    assert npy(np.asfortranarray(value))[:128] != npy(value)[:128]
    decoded = _decode_arrays(content(b_and(fortran)), decode_global(GLOBAL))
    assert np.array_equal(decoded["w"], value)
    assert screen_train(content(b_and(fortran)), decode_global(GLOBAL), **LIMITS).update_norm == pytest.approx(np.sqrt(17))
    big_endian = raw("float32", (2, 2), npy(value.astype(">f4")))  # declared right, bytes in the other order
    exc = rejected(content(b_and(big_endian)))
    assert exc.reason == "array_dtype" and "float32 (declared) / >f4 (real)" in exc.detail


def test_declarations_are_checked_on_the_fast_path():
    real = npy(np.ones((2, 2), np.float32))
    dtype_lie = rejected(content(b_and(raw("float64", (2, 2), real))))
    assert dtype_lie.reason == "array_dtype" and "float64 (declared) / float32 (real)" in dtype_lie.detail
    shape_lie = rejected(content(b_and(raw("float32", (4,), real))))
    assert shape_lie.reason == "array_shape" and "[4] (declared) / [2, 2] (real)" in shape_lie.detail


def test_a_non_finite_value_names_its_array():
    exc = rejected(content({"w": Array(np.ones((2, 2), np.float32)), "b": Array(np.array([1, np.nan, 1], np.float32))}))
    assert exc.reason == "array_nonfinite" and "'b'" in exc.detail
    model = {"c": np.zeros(2, np.complex64)}  # not a real number: checked array by array
    nan_imaginary = content({"c": Array(np.array([1, complex(0, np.nan)], np.complex64))})
    with pytest.raises(Rejected, match="'c' holds NaN"):
        screen_train(nan_imaginary, model, **LIMITS)


def test_norms_are_the_per_array_float64_ones():
    rng = np.random.default_rng(7)
    model = {"a": rng.standard_normal((5, 7)).astype(np.float32), "b": rng.standard_normal(11),
             "c": rng.integers(-9, 9, (3, 3)), "d": rng.standard_normal(4).astype(np.float16)}
    reply = {name: (value + rng.integers(-3, 3, value.shape)).astype(value.dtype) for name, value in model.items()}
    screened = screen_train(content({n: Array(v) for n, v in reply.items()}), model, **LIMITS)
    flat = {n: v.astype(np.float64).ravel() for n, v in reply.items()}
    norm = np.sqrt(sum(v @ v for v in flat.values()))
    distance = np.sqrt(sum((v - model[n].astype(np.float64).ravel()) @ (v - model[n].astype(np.float64).ravel())
                           for n, v in flat.items()))
    assert screened.update_norm == pytest.approx(norm, rel=1e-12)
    assert screened.update_distance == pytest.approx(distance, rel=1e-12)


def test_finite_values_whose_squares_overflow_are_not_called_non_finite():
    model = {"x": np.zeros(2)}
    screened = screen_train(content({"x": Array(np.array([1e200, 1.0]))}), model, **LIMITS)
    assert screened.update_norm == np.inf  # as the per-array sum always gave
