"""The CBOR metadata codec: round trips, and hostile payloads refused with a reason."""

from __future__ import annotations

import contextlib
import math
import pickle
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.metadata
from app.metadata import (
    MAX_EPOCHS,
    MAX_LABEL_COUNT,
    MAX_LABELS,
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
from flwr.app import ConfigRecord, MetricRecord, RecordDict

GOOD = TrainProcessMetadata(training_time=12.5, converged=True, training_losses={"epoch_1": 0.56, "epoch_2": 0.34})


def payload(**overrides):
    """A version-1 train payload (what a site that did not opt in to label_counts sends)."""
    base = {"version": 1, "kind": "train", "training_time": 1.0, "converged": False,
            "training_losses": {"epoch_1": 0.5}}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def payload_v2(**overrides):
    return payload(**{"version": 2, "label_counts": {"0": 10, "1": 7}} | overrides)


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


# --- the fast paths: large maps, tags, the per-thread decoder ------------------------------

BIG = 40  # entries: above the size where training_losses is checked in bulk


def first_fault(losses):
    """The rule for training_losses, one entry at a time: the phrase decode's refusal must contain."""
    for key, value in losses.items():
        if type(key) is not str or not 0 < len(key) <= 64 or not key.isprintable():
            return "keys must be printable"
        if type(value) not in (float, int):
            return f"training_losses[{key!r}] must be a number"
        if not math.isfinite(value):
            return f"training_losses[{key!r}] must be finite"
    return None


good_keys = st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=12)
any_keys = st.text(max_size=70) | st.binary(max_size=4) | good_keys
any_values = (st.floats() | st.integers(-2**63, 2**63) | st.booleans() | st.none() | st.text(max_size=3)
              | st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=400)
@given(st.dictionaries(good_keys, finite, min_size=BIG - 5, max_size=BIG + 20),
       st.lists(st.tuples(any_keys, any_values), max_size=2), st.data())
def test_large_maps_are_judged_like_the_per_entry_rule(losses, odd_entries, data):
    items = list(losses.items())
    for entry in odd_entries:
        items.insert(data.draw(st.integers(0, len(items))), entry)
    losses = dict(items)
    fault = first_fault(losses)
    raw = cbor2.dumps(payload(training_losses=losses))
    if fault is None:
        assert decode(raw).training_losses == losses
    else:
        with pytest.raises(MetadataError, match=re.escape(fault)):
            decode(raw)
    if all(type(k) is str for k in losses):  # the constructor, on the same map
        with contextlib.nullcontext() if fault is None else pytest.raises(MetadataError, match=re.escape(fault)):
            TrainProcessMetadata(1.0, True, losses)


@pytest.mark.parametrize("n", [5, BIG, MAX_EPOCHS])
@pytest.mark.parametrize(("entry", "reason"), [
    (("e", math.nan), "finite"), (("e", -math.inf), "finite"), (("e", True), "must be a number"),
    (("e", None), "must be a number"), (("", 0.5), "keys must be printable"),
    (("x" * 65, 0.5), "keys must be printable"),
    (("a\nb", 0.5), "keys must be printable"), (("a\tb", 0.5), "keys must be printable"),
    (("\x7f", 0.5), "keys must be printable"), (("\u200b", 0.5), "keys must be printable"),
    ((b"e", 0.5), "keys must be printable"),
])
def test_a_bad_last_entry_is_found_in_maps_of_any_size(n, entry, reason):
    losses = {f"epoch_{i}": 1.0 / i for i in range(1, n)} | dict([entry])
    with pytest.raises(MetadataError, match=reason):
        decode(cbor2.dumps(payload(training_losses=losses)))


@pytest.mark.parametrize("n", [5, BIG])
def test_unusual_but_valid_large_maps_are_accepted(n):
    cases = [
        {f"e{i}": 1e308 for i in range(n)},  # their sum overflows; each value is finite
        {f"e{i}": i for i in range(n)},  # integers, from an encoder that shrinks 2.0 to 2
        {f"époque {i}": 0.5 for i in range(n)},  # printable, not ASCII
        {("x" * 64 if i == 0 else f"e{i}"): 0.5 for i in range(n)},  # a key of the longest length allowed
    ]
    for losses in cases:
        assert decode(cbor2.dumps(payload(training_losses=losses))).training_losses == losses
        assert TrainProcessMetadata(1.0, True, losses).training_losses == losses


class Text(str):
    pass


@pytest.mark.parametrize("n", [5, BIG])
def test_the_constructor_still_wants_exact_types_in_large_maps(n):
    with pytest.raises(MetadataError, match="keys must be printable"):
        TrainProcessMetadata(1.0, True, {Text(f"e{i}"): 0.5 for i in range(n)})
    with pytest.raises(MetadataError, match="must be a number, got float64"):
        TrainProcessMetadata(1.0, True, {f"e{i}": np.float64(0.5) for i in range(n)})


@given(st.integers(0, 2**64 - 1))
def test_any_tag_number_is_refused_by_name(tag):
    with pytest.raises(MetadataError, match=f"CBOR tag {tag} is not allowed"):
        decode(cbor2.dumps(cbor2.CBORTag(tag, 0)))


@pytest.mark.parametrize("data", [
    b"\xc1",  # a tag with nothing after it: refused before its content is read
    bytes.fromhex("c2") + b"\x5a\xff\xff\xff\xff",  # a bignum declaring 4 GiB of digits
    cbor2.dumps(payload(training_losses={f"e{i}": 0.5 for i in range(BIG)} | {"z": cbor2.CBORTag(2, b"\x01")})),
    cbor2.dumps(payload(training_losses={cbor2.CBORTag(1, 0): 0.5})),  # a tagged key
    cbor2.dumps(payload(kind=cbor2.CBORTag(55799, "train"))),
])
def test_a_tag_anywhere_is_refused(data):
    with pytest.raises(MetadataError, match=r"CBOR tag \d+ is not allowed"):
        decode(data)


def test_trailing_bytes_after_a_payload_longer_than_a_read():
    data = encode(TrainProcessMetadata(1.0, True, {f"epoch_{i}": 1.0 / i for i in range(1, MAX_EPOCHS + 1)}))
    assert len(data) > 4096  # the decoder reads ahead in 4 KiB blocks, then gives back what it did not use
    assert decode(data).training_losses["epoch_1000"] == 1 / 1000
    with pytest.raises(MetadataError, match="^1 trailing bytes"):
        decode(data + b"\x00")


def test_a_failed_decode_leaves_nothing_for_the_next():
    big = TrainProcessMetadata(1.0, True, {f"epoch_{i}": 1.0 / i for i in range(1, 600)})
    data = encode(big)
    key = data.index(b"epoch_300") - 1  # the header byte of a key, half-way into the payload
    for broken in (data[:5000], data[:-1], data[:key] + b"\xc1" + data[key + 1:], b"\xa5" + b"\xff" * 9000):
        with pytest.raises(MetadataError):
            decode(broken)
        assert decode(encode(GOOD)) == GOOD
        assert decode(data) == big


def test_threads_decode_side_by_side():
    # Each thread has its own decoder. Two sharing one would show here: a refused tag
    # runs Python code in the middle of a decode, where the thread can switch.
    def verdict(data):
        try:
            return decode(data)
        except MetadataError as exc:
            return str(exc)

    metas = [TrainProcessMetadata(float(i), i % 2 == 0, {f"epoch_{j}": i / j for j in range(1, 2 + i % 30)})
             for i in range(1, 3000)]
    tagged = cbor2.dumps(payload(training_losses={"e": cbor2.CBORTag(1, 0)}))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(4) as pool:
            verdicts = list(pool.map(verdict, [d for m in metas for d in (encode(m), tagged)], chunksize=8))
    finally:
        sys.setswitchinterval(interval)
    assert verdicts == [v for m in metas for v in (m, "CBOR tag 1 is not allowed")]


def test_payloads_of_older_clients_still_decode():
    # Clients before this version wrote cbor2's canonical form: sorted keys, floats as short as they stay exact.
    old = cbor2.dumps(payload(training_time=0.5, training_losses={"epoch_1": 0.25, "epoch_2": 1 / 3}), canonical=True)
    assert b"\xf9" in old  # a half-precision float
    assert decode(old) == TrainProcessMetadata(0.5, False, {"epoch_1": 0.25, "epoch_2": 1 / 3})


def test_encoding_writes_keys_in_canonical_order():
    keys = ["zz", "é", "a", "epoch_10", "epoch_9", "b", "ab", "x" * 30]
    meta = TrainProcessMetadata(1.0, True, {key: 0.5 for key in keys})
    top = cbor2.loads(encode(meta))
    assert list(top) == ["kind", "version", "converged", "training_time", "training_losses"]
    assert list(top["training_losses"]) == sorted(keys, key=lambda k: (len(k.encode()), k.encode()))
    assert list(cbor2.loads(encode(EvaluateProcessMetadata(2.0)))) == ["kind", "version", "evaluation_time"]


def test_a_record_of_another_type_under_the_name_is_no_metadata():
    content = RecordDict({"train_metadata": MetricRecord({"meta": 1})})
    with pytest.raises(MetadataError, match="no 'train_metadata' ConfigRecord"):
        from_content(content, TrainProcessMetadata)


# --- label_counts: schema version 2 ------------------------------------------------------

counts = st.dictionaries(st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=64),
                         st.integers(0, MAX_LABEL_COUNT), max_size=50)


@given(losses, counts)
def test_label_counts_round_trip(training_losses, label_counts):
    meta = TrainProcessMetadata(3.0, True, training_losses, label_counts)
    data = encode(meta)
    assert decode(data) == meta and decode(data).label_counts == label_counts
    assert cbor2.loads(data)["version"] == 2  # the newest, SCHEMA_VERSION, is written only with a Ray node


def test_without_label_counts_the_bytes_are_version_1_as_before():
    old = cbor2.dumps({"kind": "train", "version": 1, "converged": True, "training_time": 12.5,
                       "training_losses": {"epoch_1": 0.56, "epoch_2": 0.34}})
    assert GOOD.label_counts is None and encode(GOOD) == old
    assert decode(old) == GOOD and decode(old).label_counts is None
    assert encode(EvaluateProcessMetadata(2.0)) == cbor2.dumps({"kind": "evaluate", "version": 1,
                                                                "evaluation_time": 2.0})


def test_label_counts_are_written_in_canonical_order():
    keys = ["malignant", "7", "10", "0", "é", "benign"]
    top = cbor2.loads(encode(TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, {key: 1 for key in keys})))
    assert list(top) == ["kind", "version", "converged", "label_counts", "training_time", "training_losses"]
    assert list(top["label_counts"]) == sorted(keys, key=lambda k: (len(k.encode()), k.encode()))


def test_empty_label_counts_are_still_version_2():
    meta = TrainProcessMetadata(1.0, True, {}, {})
    assert cbor2.loads(encode(meta))["version"] == 2 and decode(encode(meta)).label_counts == {}


def test_a_version_1_only_reader_refuses_version_2_but_reads_sites_that_did_not_opt_in(monkeypatch):
    monkeypatch.setattr(app.metadata, "_READERS", {1: app.metadata._READERS[1]})
    with pytest.raises(MetadataError, match=r"unsupported schema version 2 \(this reader knows 1\)"):
        decode(encode(TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, {"0": 3})))
    assert decode(encode(GOOD)) == GOOD
    assert decode(encode(EvaluateProcessMetadata(2.0)), EvaluateProcessMetadata) == EvaluateProcessMetadata(2.0)


def test_a_version_2_evaluate_payload_reads_like_version_1():
    # Evaluate did not change in version 2; nothing writes it yet, but a version names the whole schema.
    data = cbor2.dumps({"kind": "evaluate", "version": 2, "evaluation_time": 2.0})
    assert decode(data, EvaluateProcessMetadata) == EvaluateProcessMetadata(2.0)
    with pytest.raises(MetadataError, match="unknown field.*: label_counts"):
        decode(cbor2.dumps({"kind": "evaluate", "version": 2, "evaluation_time": 2.0, "label_counts": {}}),
               EvaluateProcessMetadata)


BAD_COUNTS = [
    ([["0", 1]], r"label_counts must be a map, got array"),
    (None, r"label_counts must be a map, got null"),
    ({"0": -1}, r"label_counts\['0'\] must be an integer from 0 to 1000000000, got -1"),
    ({"0": 1.0}, r"label_counts\['0'\] must be an integer .* got float"),
    ({"0": math.nan}, r"label_counts\['0'\] must be an integer .* got float"),
    ({"0": True}, r"label_counts\['0'\] must be an integer .* got bool"),
    ({"0": "3"}, r"label_counts\['0'\] must be an integer .* got text"),
    ({"0": MAX_LABEL_COUNT + 1}, r"label_counts\['0'\] must be an integer .* got 1000000001"),
    ({"0": 2**63}, r"got 9223372036854775808"),
    ({str(i): 1 for i in range(MAX_LABELS + 1)}, r"label_counts has 1001 entries, over the cap of 1000"),
    ({"": 1}, r"label_counts keys must be printable text of 1-64 characters, got ''"),
    ({"x" * 65: 1}, r"label_counts keys must be printable"),
    ({"a\nb": 1}, r"label_counts keys must be printable"),
    ({"\u200b": 1}, r"label_counts keys must be printable"),
    ({b"0": 1}, r"label_counts keys must be printable text of 1-64 characters, got b'0'"),
]


@pytest.mark.parametrize(("label_counts", "reason"), BAD_COUNTS)
def test_bad_label_counts_are_refused_in_payloads(label_counts, reason):
    with pytest.raises(MetadataError, match=reason):
        decode(cbor2.dumps(payload_v2(label_counts=label_counts)))


@pytest.mark.parametrize(("label_counts", "reason"), [case for case in BAD_COUNTS if case[0] is not None])
def test_bad_label_counts_are_refused_by_the_constructor(label_counts, reason):
    with pytest.raises(MetadataError, match=reason):
        TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, label_counts)


def test_the_constructor_wants_exact_types_in_label_counts():
    with pytest.raises(MetadataError, match=r"label_counts\['0'\] must be an integer .* got int64"):
        TrainProcessMetadata(1.0, True, {}, {"0": np.int64(3)})
    with pytest.raises(MetadataError, match=r"label_counts\['0'\] must be an integer .* got integer$"):
        TrainProcessMetadata(1.0, True, {}, {"0": 10**5000})  # too long to print: its type is named
    with pytest.raises(MetadataError, match="label_counts keys must be printable"):
        TrainProcessMetadata(1.0, True, {}, {Text("0"): 3})
    with pytest.raises(MetadataError, match="label_counts keys must be printable text of 1-64 characters, got 0"):
        TrainProcessMetadata(1.0, True, {}, {0: 3})  # type: ignore[dict-item]
    with pytest.raises(MetadataError, match="map key must be a text string or byte string"):
        decode(cbor2.dumps(payload_v2(label_counts={0: 3})))  # the decoder refuses an integer key itself


def test_the_largest_label_counts_allowed_are_accepted():
    label_counts = {f"label_{i}": MAX_LABEL_COUNT if i % 2 else 0 for i in range(MAX_LABELS)} | {"x" * 64: 1}
    del label_counts["label_0"]
    assert decode(cbor2.dumps(payload_v2(label_counts=label_counts))).label_counts == label_counts


@pytest.mark.parametrize("data", [
    cbor2.dumps(payload_v2(label_counts={"0": cbor2.CBORTag(2, b"\x01")})),  # a bignum count
    cbor2.dumps(payload_v2(label_counts={"0": 2**64})),  # cbor2 writes it as a bignum: tag 2
    cbor2.dumps(payload_v2(label_counts={"0": -(2**64) - 1})),  # tag 3
    cbor2.dumps(payload_v2(label_counts={cbor2.CBORTag(1, 0): 1})),  # a tagged key
    cbor2.dumps(payload_v2(label_counts=cbor2.CBORTag(258, ["0"]))),  # a set
])
def test_a_tag_inside_label_counts_is_refused(data):
    with pytest.raises(MetadataError, match=r"CBOR tag \d+ is not allowed"):
        decode(data)


def test_label_counts_nested_deeper_are_refused():
    with pytest.raises(MetadataError, match=r"label_counts\['0'\] must be an integer .* got map"):
        decode(cbor2.dumps(payload_v2(label_counts={"0": {"a": 1}})))
    with pytest.raises(MetadataError, match="depth"):
        decode(cbor2.dumps(payload_v2(label_counts={"0": {"a": {"b": 1}}})))


def test_version_2_requires_label_counts_and_version_1_refuses_them():
    with pytest.raises(MetadataError, match="^missing field\\(s\\): label_counts$"):
        decode(cbor2.dumps(payload_v2(label_counts=DROP)))
    with pytest.raises(MetadataError, match="^unknown field\\(s\\): label_counts$"):
        decode(cbor2.dumps(payload(label_counts={"0": 1})))
    with pytest.raises(MetadataError, match="unknown field.*: extra"):
        decode(cbor2.dumps(payload_v2(extra=1)))


def test_a_version_2_payload_is_still_checked_like_version_1():
    with pytest.raises(MetadataError, match="finite"):
        decode(cbor2.dumps(payload_v2(training_losses={"e": math.nan})))
    with pytest.raises(MetadataError, match="expected kind 'train'"):
        decode(cbor2.dumps(payload_v2(kind="evaluate")))


# --- the Ray node: schema version 3 (simulation runtime only) -------------------------------

NODE_ID = "3c5a9d0e8f1b2a4c6d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e"  # Ray's: 56 hex digits
RAY = {"ray_node_id": NODE_ID, "ray_node_ip": "10.213.47.5"}


def payload_v3(**overrides):
    return payload(**{"version": 3} | RAY | overrides)


ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
node_ids = st.text("0123456789abcdef", min_size=1, max_size=64)


@given(losses, node_ids, ips, st.one_of(st.none(), counts))
def test_train_metadata_with_a_ray_node_round_trips(training_losses, node_id, ip, label_counts):
    meta = TrainProcessMetadata(3.0, True, training_losses, label_counts, ray_node_id=node_id, ray_node_ip=ip)
    data = encode(meta)
    assert decode(data) == meta
    assert cbor2.loads(data)["version"] == 3
    assert ("label_counts" in cbor2.loads(data)) is (label_counts is not None)  # still opt-in


@given(node_ids, ips)
def test_evaluate_metadata_with_a_ray_node_round_trips(node_id, ip):
    meta = EvaluateProcessMetadata(2.0, ray_node_id=node_id, ray_node_ip=ip)
    assert decode(encode(meta), EvaluateProcessMetadata) == meta


def test_a_ray_node_is_written_in_canonical_order():
    top = cbor2.loads(encode(TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, {"0": 1}, **RAY)))
    assert list(top) == sorted(top, key=lambda k: (len(k.encode()), k.encode()))
    top = cbor2.loads(encode(EvaluateProcessMetadata(2.0, **RAY)))
    assert list(top) == ["kind", "version", "ray_node_id", "ray_node_ip", "evaluation_time"]


def test_without_a_ray_node_a_reply_is_as_before_version_3():
    # A deployment never sets it: its replies are byte for byte what versions 1 and 2 wrote.
    assert cbor2.loads(encode(GOOD))["version"] == 1
    assert cbor2.loads(encode(TrainProcessMetadata(1.0, True, {}, {"0": 1})))["version"] == 2
    assert cbor2.loads(encode(EvaluateProcessMetadata(2.0)))["version"] == 1
    assert decode(encode(GOOD)).ray_node_id is None


def test_a_version_2_only_reader_refuses_version_3_and_reads_the_rest(monkeypatch):
    monkeypatch.setattr(app.metadata, "_READERS", {v: app.metadata._READERS[v] for v in (1, 2)})
    with pytest.raises(MetadataError, match=r"unsupported schema version 3 \(this reader knows 1, 2\)"):
        decode(encode(TrainProcessMetadata(1.0, True, {}, **RAY)))
    assert decode(encode(GOOD)) == GOOD


BAD_RAY_NODES = [
    ({"ray_node_id": NODE_ID.upper()}, r"ray_node_id must be 1-64 lowercase hex digits, got '3C5A"),
    ({"ray_node_id": ""}, r"ray_node_id must be 1-64 lowercase hex digits, got ''"),
    ({"ray_node_id": "a" * 65}, r"ray_node_id must be 1-64 lowercase hex digits"),
    ({"ray_node_id": "node-1"}, r"ray_node_id must be .* got 'node-1'"),
    ({"ray_node_id": NODE_ID + "\n"}, r"ray_node_id must be"),
    ({"ray_node_id": b"\x3c\x5a"}, r"ray_node_id must be .* got byte string"),
    ({"ray_node_id": 5}, r"ray_node_id must be .* got integer"),
    ({"ray_node_id": None}, r"ray_node_id must be .* got null"),
    ({"ray_node_ip": "999.1.1.1"}, r"ray_node_ip must be an IPv4 or IPv6 address, got '999.1.1.1'"),
    ({"ray_node_ip": "ray-worker-1"}, r"ray_node_ip must be an IPv4 or IPv6 address"),
    ({"ray_node_ip": "10.0.0.1 "}, r"ray_node_ip must be an IPv4 or IPv6 address"),
    ({"ray_node_ip": "1" * 46}, r"ray_node_ip must be an IPv4 or IPv6 address"),
    ({"ray_node_ip": b"\n\x00\x00\x01"}, r"ray_node_ip must be an IPv4 or IPv6 address, got byte string"),
    ({"ray_node_ip": 167772161}, r"ray_node_ip must be an IPv4 or IPv6 address, got integer"),
    ({"ray_node_ip": ["10.0.0.1"]}, r"ray_node_ip must be an IPv4 or IPv6 address, got array"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD_RAY_NODES)
def test_bad_ray_nodes_are_refused_in_payloads(fields, reason):
    with pytest.raises(MetadataError, match=reason):
        decode(cbor2.dumps(payload_v3(**fields)))
    with pytest.raises(MetadataError, match=reason):
        decode(cbor2.dumps({"kind": "evaluate", "version": 3, "evaluation_time": 1.0} | RAY | fields),
               EvaluateProcessMetadata)


@pytest.mark.parametrize(("fields", "reason"), [c for c in BAD_RAY_NODES if None not in c[0].values()])
def test_bad_ray_nodes_are_refused_by_the_constructor(fields, reason):
    with pytest.raises(MetadataError, match=reason):
        TrainProcessMetadata(1.0, True, {}, **(RAY | fields))
    with pytest.raises(MetadataError, match=reason):
        EvaluateProcessMetadata(1.0, **(RAY | fields))


def test_a_ray_node_is_both_fields_or_neither():
    with pytest.raises(MetadataError, match="ray_node_ip must be"):
        TrainProcessMetadata(1.0, True, {}, ray_node_id=NODE_ID)
    with pytest.raises(MetadataError, match="ray_node_id must be"):
        EvaluateProcessMetadata(1.0, ray_node_ip="10.0.0.1")
    with pytest.raises(MetadataError, match=r"^missing field\(s\): ray_node_ip$"):
        decode(cbor2.dumps(payload_v3(ray_node_ip=DROP)))


def test_version_3_requires_the_ray_node_and_earlier_versions_refuse_it():
    with pytest.raises(MetadataError, match=r"^missing field\(s\): ray_node_id, ray_node_ip$"):
        decode(cbor2.dumps(payload_v3(ray_node_id=DROP, ray_node_ip=DROP)))
    with pytest.raises(MetadataError, match=r"^unknown field\(s\): ray_node_id, ray_node_ip$"):
        decode(cbor2.dumps(payload(**RAY)))
    with pytest.raises(MetadataError, match=r"^unknown field\(s\): ray_node_id, ray_node_ip$"):
        decode(cbor2.dumps(payload_v2(**RAY)))
    with pytest.raises(MetadataError, match="unknown field.*: label_counts"):  # evaluate never had it
        decode(cbor2.dumps({"kind": "evaluate", "version": 3, "evaluation_time": 1.0, "label_counts": {}} | RAY),
               EvaluateProcessMetadata)
    with pytest.raises(MetadataError, match="unknown field.*: extra"):
        decode(cbor2.dumps(payload_v3(extra=1)))


def test_a_version_3_payload_is_still_checked_like_the_others():
    assert decode(cbor2.dumps(payload_v3(label_counts={"0": 3}))).label_counts == {"0": 3}
    for bad, reason in [({"training_losses": {"e": math.nan}}, "finite"), ({"kind": "evaluate"}, "expected kind"),
                        ({"label_counts": {"0": -1}}, r"label_counts\['0'\] must be an integer"),
                        ({"ray_node_id": cbor2.CBORTag(2, b"\x01")}, r"CBOR tag 2 is not allowed"),
                        ({"ray_node_ip": {"a": {"b": {"c": 1}}}}, "depth")]:
        with pytest.raises(MetadataError, match=reason):
            decode(cbor2.dumps(payload_v3(**bad)))


# --- the device that trained: schema version 4 ---------------------------------------------


@given(losses, st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:15", "mps"]), st.one_of(st.none(), counts))
def test_train_metadata_with_its_device_round_trips_as_version_4(training_losses, device, label_counts):
    meta = TrainProcessMetadata(3.0, True, training_losses, label_counts, device=device)
    data = encode(meta)
    assert decode(data) == meta and cbor2.loads(data)["version"] == 4 == SCHEMA_VERSION
    with_ray = TrainProcessMetadata(3.0, True, training_losses, label_counts, device=device, **RAY)
    assert decode(encode(with_ray)) == with_ray


@pytest.mark.parametrize("device", ["CPU", "", "cuda:", "cuda:1234", "gpu 0", "c" * 17, "cpu\n", 5, None])
def test_a_device_that_is_not_a_torch_device_name_is_refused(device):
    with pytest.raises(MetadataError, match="device"):
        decode(cbor2.dumps(payload(version=4, device=device)))


def test_a_version_3_reader_refuses_a_device_and_reads_the_rest(monkeypatch):
    monkeypatch.setattr(app.metadata, "_READERS", {v: app.metadata._READERS[v] for v in (1, 2, 3)})
    with pytest.raises(MetadataError, match=r"unsupported schema version 4 \(this reader knows 1, 2, 3\)"):
        decode(encode(TrainProcessMetadata(1.0, True, {}, device="cpu")))
    assert decode(encode(GOOD)) == GOOD
