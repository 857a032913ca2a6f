"""The flowerdock layer: a message type declared once, carried safely both ways, evolving by declaration."""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Annotated, Literal

import cbor2
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from flowerdock import (DeclarationError, Key, MessageError, Range, Size, Text, Version, decode, encode, from_content,
                        message, to_config_record)
from tests.conftest import server_identity

# --- a type invented for these tests: nested maps and lists, optional fields, allowed keys ----------

Name = Annotated[str, Text(1, 16)]
Rate = Annotated[float, Range(0, 1)]
Knobs = Annotated[dict[Literal["lr", "decay"], Annotated[float, Range(0, 10)]], Size(max=2)]


@message(kind="round_plan", versions=[Version(1), Version(2, adds=["note"])])
class RoundPlan:
    """What a strategy tells a ClientApp to do this round."""

    epochs: Annotated[int, Range(1, 100)]
    rates: Annotated[list[Rate], Size(max=20)]
    layers: Annotated[dict[Name, Knobs], Size(max=8)]
    schedule: Annotated[list[Annotated[list[Annotated[int, Range(0, 1000)]], Size(min=1, max=4)]], Size(max=4)]
    mode: Literal["sgd", "adam"] = "sgd"
    blob: Annotated[bytes, Size(max=32)] = b""
    note: Annotated[str, Text(max=40)] | None = None  # version 2


@message(kind="round_plan")  # the same type as a reader that predates `note` declares it
class RoundPlanV1:
    epochs: Annotated[int, Range(1, 100)]
    rates: Annotated[list[Rate], Size(max=20)]
    layers: Annotated[dict[Name, Knobs], Size(max=8)]
    schedule: Annotated[list[Annotated[list[Annotated[int, Range(0, 1000)]], Size(min=1, max=4)]], Size(max=4)]
    mode: Literal["sgd", "adam"] = "sgd"
    blob: Annotated[bytes, Size(max=32)] = b""


PLAN = RoundPlan(3, [0.1, 0.01], {"conv1": {"lr": 0.5}, "fc": {"lr": 0.1, "decay": 0.9}}, [[1, 2], [3]])


def wire(**overrides):
    """PLAN's payload as a dict, with fields replaced or (DROP) removed."""
    payload = cbor2.loads(encode(PLAN)) | overrides
    return cbor2.dumps({k: v for k, v in payload.items() if v is not DROP})


DROP = object()

# --- round trips, both directions --------------------------------------------------------------


@pytest.fixture
def identity():
    yield from server_identity(run_id=1)  # a Message needs a run ID


def test_round_trip():
    assert decode(encode(PLAN), RoundPlan) == PLAN
    noted = dataclasses.replace(PLAN, mode="adam", blob=b"\x00\xff", note="warm restart")
    assert decode(encode(noted), RoundPlan) == noted


def test_strategy_to_clientapp_instruction(identity):
    name, record = to_config_record(PLAN)
    instruction = Message(content=RecordDict({name: record}), dst_node_id=7, message_type="train")
    assert name == "round_plan" and from_content(instruction.content, RoundPlan) == PLAN


def test_clientapp_to_strategy_reply(identity):
    instruction = Message(content=RecordDict(), dst_node_id=7, message_type="train")
    reply = Message(content=RecordDict(dict([to_config_record(PLAN)])), reply_to=instruction)
    assert from_content(reply.content, RoundPlan) == PLAN


def test_a_missing_record_or_entry_is_a_message_error():
    with pytest.raises(MessageError, match="no 'round_plan' ConfigRecord"):
        from_content(RecordDict({}), RoundPlan)
    with pytest.raises(MessageError, match="'round_plan' record has no 'meta' entry"):
        from_content(RecordDict({"round_plan": ConfigRecord({"x": 1})}), RoundPlan)


def test_encoding_is_canonical_and_leaves_defaults_out():
    payload = cbor2.loads(encode(PLAN))
    assert list(payload) == ["kind", "rates", "epochs", "layers", "version", "schedule"]  # shorter key first
    assert list(payload["layers"]) == ["fc", "conv1"]  # nested maps too
    assert payload["version"] == 1 and "mode" not in payload and "note" not in payload
    assert encode(PLAN) == encode(RoundPlan(3, [0.1, 0.01], {"fc": {"decay": 0.9, "lr": 0.1}, "conv1": {"lr": 0.5}},
                                            [[1, 2], [3]]))


# --- every guarantee, with a failing case each ---------------------------------------------------

@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00" * (64 * 1024 + 1), "over the 65536-byte cap"),  # size, before decoding
    (b"\x81" * 5000 + b"\x00", "depth"),  # depth, while decoding
    (wire(layers={"a": {"lr": {"x": {"y": 1}}}}), "depth"),
    (wire(epochs=cbor2.CBORTag(2, b"\x01")), "CBOR tag 2 is not allowed"),  # no tags
    (wire(rates={1.0}), "CBOR tag 258 is not allowed"),
    (bytes.fromhex("a2617601617602"), "Duplicate"),  # no duplicate keys
    (encode(PLAN) + b"\x00", "1 trailing bytes"),  # no trailing bytes
    (cbor2.dumps([1]), "must be a CBOR map, got array"),
    (wire(kind="train"), "expected kind 'round_plan', got 'train'"),  # exact type
    (wire(extra=1), r"^unknown field\(s\): extra$"),  # exact fields
    (wire(schedule=DROP), r"^missing field\(s\): schedule$"),
    (wire(note="v2 only"), r"^unknown field\(s\): note$"),  # not in version 1
    (wire(epochs=3.0), "epochs must be an integer from 1 to 100, got float"),  # exact types
    (wire(epochs=True), "epochs must be an integer from 1 to 100, got bool"),
    (wire(epochs=101), "epochs must be an integer from 1 to 100, got 101"),  # numeric ranges
    (wire(rates=[0.5, math.nan]), r"rates\[1\] must be finite, got nan"),  # finite numbers
    (wire(rates=[0.5, -math.inf]), r"rates\[1\] must be finite, got -inf"),
    (wire(rates=[1.5]), r"rates\[0\] must be between 0 and 1, got 1.5"),
    (wire(rates=[0.1] * 21), "rates has 21 items, over the cap of 20"),  # bounded collections
    (wire(schedule=[[]]), r"schedule\[0\] has 0 items, under the minimum of 1"),
    (wire(schedule=[[1, "2"]]), r"schedule\[0\]\[1\] must be an integer from 0 to 1000, got text"),
    (wire(layers={"a" * 17: {}}), "layers keys must be printable text of 1-16 characters, got 'aaaa"),  # strings
    (wire(layers={"a\x00": {}}), "layers keys must be printable"),
    (wire(layers={"fc": {"momentum": 0.9}}), r"layers\['fc'\] keys must be one of 'lr', 'decay', got 'momentum'"),
    (wire(layers={"fc": {"lr": 11.0}}), r"layers\['fc'\]\['lr'\] must be between 0 and 10, got 11.0"),  # path
    (wire(layers={f"l{i}": {} for i in range(9)}), "layers has 9 entries, over the cap of 8"),
    (wire(layers=[]), "layers must be a map, got array"),
    (wire(mode="rmsprop"), "mode must be one of 'sgd', 'adam', got 'rmsprop'"),
    (wire(blob=b"x" * 33), "blob must be a byte string of 0-32 bytes, got 33 bytes"),
    (wire(version=3), r"unsupported schema version 3 \(this reader knows 1, 2\)"),
    (wire(version="1"), "no integer 'version' field"),
])
def test_a_bad_payload_is_refused_naming_the_field_and_the_reason(data, reason):
    with pytest.raises(MessageError, match=reason):
        decode(data, RoundPlan)


def test_only_bytes_and_only_declared_types():
    with pytest.raises(MessageError, match="payload must be bytes, got str"):
        decode("text", RoundPlan)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="not a declared message type"):
        encode({"epochs": 3})
    with pytest.raises(MessageError):
        decode(pickle.dumps(PLAN), RoundPlan)


def test_the_constructor_checks_as_decode_does():
    with pytest.raises(MessageError, match=r"layers\['fc'\]\['lr'\] must be between 0 and 10, got 11.0"):
        RoundPlan(1, [], {"fc": {"lr": 11.0}}, [])
    with pytest.raises(MessageError, match=r"rates\[0\] must be a number, got float32"):
        import numpy as np
        RoundPlan(1, [np.float32(0.5)], {}, [])
    with pytest.raises(MessageError, match="note must be printable text of 1-40 characters, got ''"):
        RoundPlan(1, [], {}, [], note="")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PLAN.epochs = 4  # type: ignore[misc]


def test_the_encoded_size_is_capped_too():
    @message(kind="tiny", max_bytes=16)
    class Tiny:
        text: Annotated[str, Text(max=64)]

    with pytest.raises(MessageError, match=r"encoded tiny message is \d+ bytes, over the 16-byte cap"):
        encode(Tiny("x" * 30))


# --- schema evolution: a change to the declaration, no reader to write ----------------------------

def test_an_optional_field_added_in_version_2_keeps_version_1_readers_reading():
    assert cbor2.loads(encode(PLAN))["version"] == 1  # without the new field: the oldest version
    old = decode(encode(PLAN), RoundPlanV1)
    assert dataclasses.asdict(old) == {k: v for k, v in dataclasses.asdict(PLAN).items() if k != "note"}
    noted = encode(dataclasses.replace(PLAN, note="x"))
    assert cbor2.loads(noted)["version"] == 2
    with pytest.raises(MessageError, match=r"unsupported schema version 2 \(this reader knows 1\)"):
        decode(noted, RoundPlanV1)


def test_an_old_version_still_decodes_with_the_new_fields_defaults():
    assert decode(encode(RoundPlanV1(3, [0.1], {}, [])), RoundPlan).note is None


def test_a_reader_may_narrow_its_versions():
    noted = encode(dataclasses.replace(PLAN, note="x"))
    with pytest.raises(MessageError, match=r"unsupported schema version 2 \(this reader knows 1\)"):
        decode(noted, RoundPlan, versions={1})


@message(kind="pair", together=[("a", "b")], versions=[Version(1), Version(2, adds=["a", "b"])])
class Pair:
    x: int
    a: Annotated[str, Text(max=8)] | None = None
    b: Annotated[str, Text(max=8)] | None = None


def test_fields_declared_together_are_set_together():
    assert decode(encode(Pair(1, "p", "q")), Pair) == Pair(1, "p", "q")
    with pytest.raises(MessageError, match="b must be printable text of 1-8 characters, got null"):
        Pair(1, "p")
    with pytest.raises(MessageError, match="^b must be sent with a$"):
        decode(cbor2.dumps({"kind": "pair", "version": 2, "x": 1, "a": "p"}), Pair)


@pytest.mark.parametrize(("declare", "reason"), [
    (lambda: message(kind="k")(type("T", (), {"__annotations__": {"x": str | int}})), "only `T | None`"),
    (lambda: message(kind="k")(type("T", (), {"__annotations__": {"x": list[int]}})), "needs a bound"),
    (lambda: message(kind="k")(type("T", (), {"__annotations__": {"x": Annotated[dict[int, int], Size(max=1)]}})),
     "map keys must be text"),
    (lambda: message(kind="k")(type("T", (), {"__annotations__": {"version": int}})), "envelope"),
    (lambda: message(kind="k", versions=[Version(1), Version(2, adds=["x"])])(
        type("T", (), {"__annotations__": {"x": int}})), "needs a default"),
    (lambda: message(kind="k", versions=[Version(2), Version(1)])(type("T", (), {"__annotations__": {"x": int}})),
     "numbered upwards"),
    (lambda: message(kind="k")(type("T", (), {"__annotations__": {"x": int | None}})), "declare it `= None`"),
])
def test_unsafe_declarations_are_refused_when_declared(declare, reason):
    with pytest.raises(DeclarationError, match=reason):
        declare()


def test_key_is_printable_text_of_1_to_64_characters():
    @message(kind="keys")
    class Keys:
        m: Annotated[dict[Key, int], Size(max=100)]

    assert decode(encode(Keys({"x" * 64: 1})), Keys).m == {"x" * 64: 1}
    for bad in ("", "x" * 65, "a\nb", "\u200b"):
        with pytest.raises(MessageError, match="m keys must be printable text of 1-64 characters"):
            Keys({bad: 1})


@message(kind="window")
class Window:
    start: Annotated[int, Range(0, 100)]
    end: Annotated[int, Range(0, 100)]

    def __post_init__(self):  # a rule across fields: the class's own, run after the declared ones
        if self.end < self.start:
            raise MessageError(f"end must not be before start, got {self.start}-{self.end}")


def test_a_rule_of_the_class_own_runs_on_construction_and_on_decode():
    assert decode(encode(Window(1, 2)), Window) == Window(1, 2)
    with pytest.raises(MessageError, match="end must not be before start, got 5-2"):
        Window(5, 2)
    with pytest.raises(MessageError, match="end must not be before start, got 5-2"):
        decode(cbor2.dumps({"kind": "window", "version": 1, "start": 5, "end": 2}), Window)
    with pytest.raises(MessageError, match="start must be an integer from 0 to 100, got 101"):
        Window(101, 200)


@message(kind="ratio")
class Ratio:
    top: int
    bottom: int

    def __post_init__(self):
        self.top / self.bottom  # noqa: B018 - raises ZeroDivisionError for a zero bottom


def test_a_rule_that_raises_something_else_is_still_a_message_error_on_decode():
    with pytest.raises(MessageError, match="ratio refused by its own rule: ZeroDivisionError"):
        decode(cbor2.dumps({"kind": "ratio", "version": 1, "top": 1, "bottom": 0}), Ratio)
