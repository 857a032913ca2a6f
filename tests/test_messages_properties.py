"""Property tests for the flowerdock layer, generated from each declaration: every declared type,
the test's own and the app's, round trips whatever is valid and refuses anything else by name."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.instructions import TrainInstruction
from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata
from flowerdock import MessageError, decode, encode, from_content, to_config_record
from flwr.app import RecordDict
from tests.message_strategies import objects
from tests.test_messages import Pair, RoundPlan, RoundPlanV1

IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
DECLARED = {
    RoundPlan: objects(RoundPlan),
    RoundPlanV1: objects(RoundPlanV1),
    Pair: objects(Pair),
    TrainProcessMetadata: objects(TrainProcessMetadata, ray_node_ip=IPS),
    EvaluateProcessMetadata: objects(EvaluateProcessMetadata, ray_node_ip=IPS),
    TrainInstruction: objects(TrainInstruction),
}
CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

ACCEPTED_REASONS = ("field(s)", "must be sent with", "CBOR tag", "nesting depth")


@pytest.mark.parametrize("cls", DECLARED, ids=lambda cls: cls.__name__)
def test_every_valid_object_round_trips(cls):
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(DECLARED[cls])
    def round_trip(obj):
        assert decode(encode(obj), cls) == obj
        assert from_content(RecordDict(dict([to_config_record(obj)])), cls) == obj

    round_trip()


@pytest.mark.parametrize("cls", DECLARED, ids=lambda cls: cls.__name__)
def test_a_field_replaced_by_any_value_is_accepted_only_if_valid_else_named(cls):
    names = [field.name for field in dataclasses.fields(cls)]

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(DECLARED[cls], st.sampled_from(names), CBOR_VALUES)
    def replace_one(obj, name, value):
        payload = cbor2.loads(encode(obj)) | {name: value}
        try:
            decoded = decode(cbor2.dumps(payload), cls)
        except MessageError as exc:
            # The error names the field (its path starts with it), or the version's field list
            # refused the key, or the value nested too deep or needed a tag (a big integer).
            assert str(exc).startswith(name) or any(reason in str(exc) for reason in ACCEPTED_REASONS), str(exc)
        else:  # what decode accepted, the constructor accepts too
            assert dataclasses.replace(decoded) == decoded

    replace_one()


@pytest.mark.parametrize("cls", DECLARED, ids=lambda cls: cls.__name__)
def test_random_bytes_and_values_never_raise_anything_but_message_error(cls):
    @settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=256) | CBOR_VALUES.map(cbor2.dumps))
    def fuzz(data):
        try:
            decode(data, cls)
        except MessageError:
            pass

    fuzz()
