"""The CBOR metadata codec: round trips, and hostile payloads refused with a reason."""

from __future__ import annotations

import math
import pickle

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.metadata import (
    MAX_EPOCHS,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    EvaluateProcessMetadata,
    MetadataError,
    TrainProcessMetadata,
    decode,
    encode,
    from_content,
    to_config_record,
)
from flwr.app import ConfigRecord, RecordDict

GOOD = TrainProcessMetadata(training_time=12.5, converged=True, training_losses={"epoch_1": 0.56, "epoch_2": 0.34})


def payload(**overrides):
    base = {"version": SCHEMA_VERSION, "kind": "train", "training_time": 1.0, "converged": False,
            "training_losses": {"epoch_1": 0.5}}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()

# --- round trips --------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
losses = st.dictionaries(st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=64),
                         finite, max_size=50)


@given(st.floats(min_value=0, max_value=7 * 24 * 3600.0), st.booleans(), losses)
def test_train_metadata_round_trips(seconds, converged, training_losses):
    meta = TrainProcessMetadata(seconds, converged, training_losses)
    assert decode(encode(meta)) == meta


@given(st.floats(min_value=0, max_value=3600.0))
def test_evaluate_metadata_round_trips(seconds):
    meta = EvaluateProcessMetadata(seconds)
    assert decode(encode(meta), EvaluateProcessMetadata) == meta


def test_encoding_is_deterministic_and_small():
    assert encode(GOOD) == encode(TrainProcessMetadata(12.5, True, {"epoch_2": 0.34, "epoch_1": 0.56}))
    assert len(encode(GOOD)) <= 128


def test_carried_in_a_config_record():
    name, record = to_config_record(GOOD)
    assert name == "train_metadata" and isinstance(record, ConfigRecord)
    assert from_content(RecordDict({name: record}), TrainProcessMetadata) == GOOD


def test_missing_record_is_a_metadata_error():
    with pytest.raises(MetadataError, match="no 'train_metadata' ConfigRecord"):
        from_content(RecordDict({}), TrainProcessMetadata)
    with pytest.raises(MetadataError, match="no 'meta' entry"):
        from_content(RecordDict({"train_metadata": ConfigRecord({"other": 1})}), TrainProcessMetadata)


def test_integers_are_accepted_as_floats():
    assert decode(cbor2.dumps(payload(training_time=3))).training_time == 3


# --- hostile payloads ------------------------------------------------------------------

TAGGED = {
    "set (tag 258)": cbor2.dumps(payload(training_losses={1, 2})),
    "regex (tag 35)": cbor2.dumps(payload(kind=cbor2.CBORTag(35, "a+"))),
    "shared reference (tag 28)": cbor2.dumps(cbor2.CBORTag(28, payload())),
    "shared value (tag 29)": cbor2.dumps(payload(training_losses=cbor2.CBORTag(29, 0))),
    "bignum (tag 2)": cbor2.dumps(payload(training_time=2**200)),
    "datetime (tag 1)": bytes.fromhex("c11a514b67b0"),
    "decimal fraction (tag 4)": bytes.fromhex("c48221196ab3"),
    "rational (tag 30)": cbor2.dumps(cbor2.CBORTag(30, [1, 3])),
    "uuid (tag 37)": cbor2.dumps(cbor2.CBORTag(37, b"0" * 16)),
    "string reference (tag 256)": cbor2.dumps(cbor2.CBORTag(256, ["a"])),
    "unknown tag 9999": cbor2.dumps(cbor2.CBORTag(9999, 1)),
    "self-describe (tag 55799)": cbor2.dumps(cbor2.CBORTag(55799, payload())),
}


@pytest.mark.parametrize("name", TAGGED)
def test_every_semantic_tag_is_refused(name):
    with pytest.raises(MetadataError, match="tag"):
        decode(TAGGED[name])


def test_pickle_is_refused():
    with pytest.raises(MetadataError):
        decode(pickle.dumps(GOOD))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid CBOR"),
        (b"\xff", "not valid CBOR"),
        (encode(GOOD) + b"\x00", "trailing bytes"),
        (cbor2.dumps([1, 2]), "must be a CBOR map"),
        (cbor2.dumps("text"), "must be a CBOR map"),
        (b"\x00" * (MAX_PAYLOAD_BYTES + 1), "over the 65536-byte cap"),
        (cbor2.dumps(payload(training_losses={"a": {"b": {"c": 1}}})), "depth"),
        (b"\x81" * 10_000 + b"\x00", "depth"),
        (bytes.fromhex("7b00000000ffffffff"), "not valid CBOR"),  # declares a 4 GiB string
        (bytes.fromhex("9b00ffffffffffffff"), "not valid CBOR"),  # declares 2**56 items
        (bytes.fromhex("bf6176016b6b696e64ff"), "indefinite"),
        (bytes.fromhex("a2617601617602"), "Duplicate"),
        (bytes.fromhex("a1617662ff00"), "not valid CBOR"),  # invalid UTF-8
        (cbor2.dumps(payload(version=DROP)), "no integer 'version'"),
        (cbor2.dumps(payload(version="1")), "no integer 'version'"),
        (cbor2.dumps(payload(version=99)), "unsupported schema version 99"),
        (cbor2.dumps(payload(kind="evaluate")), "expected kind 'train'"),
        (cbor2.dumps(payload(extra=1)), "unknown field"),
        (cbor2.dumps(payload(converged=DROP)), "missing field"),
        (cbor2.dumps(payload(training_time=math.nan)), "finite"),
        (cbor2.dumps(payload(training_time=math.inf)), "finite"),
        (cbor2.dumps(payload(training_time=-1.0)), "between 0 and"),
        (cbor2.dumps(payload(training_time=1e12)), "between 0 and"),
        (cbor2.dumps(payload(training_time="1.0")), "must be a number"),
        (cbor2.dumps(payload(training_time=True)), "must be a number"),
        (cbor2.dumps(payload(converged=1)), "converged must be bool"),
        (cbor2.dumps(payload(training_losses=[0.5])), "must be a map"),
        (cbor2.dumps(payload(training_losses={"e": math.nan})), "finite"),
        (cbor2.dumps(payload(training_losses={"e": b"0.5"})), "must be a number"),
        (cbor2.dumps(payload(training_losses={"": 0.5})), "keys must be printable"),
        (cbor2.dumps(payload(training_losses={"x" * 65: 0.5})), "keys must be printable"),
        (cbor2.dumps(payload(training_losses={"a\nb": 0.5})), "keys must be printable"),
        (cbor2.dumps(payload(training_losses={f"e{i}": 0.1 for i in range(MAX_EPOCHS + 1)})), "over the cap"),
        (b"\x1b" + (10**6).to_bytes(8, "big"), "must be a CBOR map"),
    ],
)
def test_hostile_payload_is_refused_with_a_reason(data, reason):
    with pytest.raises(MetadataError, match=reason):
        decode(data)


def test_a_million_epochs_is_refused_before_decoding():
    huge = cbor2.dumps(payload(training_losses={f"e{i}": 0.1 for i in range(1_000_000)}))
    with pytest.raises(MetadataError, match="byte cap"):
        decode(huge)


def test_only_bytes_are_decoded():
    with pytest.raises(MetadataError, match="must be bytes"):
        decode("a string")  # type: ignore[arg-type]


def test_encode_refuses_what_decode_would_refuse():
    with pytest.raises(MetadataError, match="finite"):
        encode(TrainProcessMetadata(1.0, True, {"epoch_1": math.nan}))
    with pytest.raises(MetadataError):
        encode({"training_time": 1.0})  # type: ignore[arg-type]


def test_metadata_error_is_a_value_error():
    assert issubclass(MetadataError, ValueError)


@settings(max_examples=2000)
@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_but_metadata_error(data):
    try:
        decode(data)
    except MetadataError:
        pass


@settings(max_examples=500)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
))
def test_random_cbor_values_are_decoded_or_refused(value):
    try:
        decode(cbor2.dumps(value))
    except MetadataError:
        pass
