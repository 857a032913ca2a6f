"""Screening against hand-built hostile replies: each rule, and what it logs."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record
from app.screening import MAX_TEXT_CHARS, Rejected, bounded, decode_global, screen_evaluate, screen_train

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
