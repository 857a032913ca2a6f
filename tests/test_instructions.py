"""The strategy's typed instruction to each node it samples to train (app/instructions.py):
chosen per node, carried in the train message, decoded as untrusted by the ClientApp and used,
and shown in both sides' lines."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from app import client_app
from app.instructions import Pacer, TrainInstruction, baseline
from app.metadata import TrainProcessMetadata, from_content as metadata_of
from app.run_config import defaults
from flowerdock import MessageError, from_content, to_config_record
from tests.conftest import json_lines, server_identity
from tests.test_strategy import GLOBAL, FakeGrid, client_rounds, make, train_reply

BASE = TrainInstruction(local_epochs=5, learning_rate=0.1, batch_size=32)


@pytest.fixture(autouse=True)
def identity():
    yield from server_identity(4242)


def test_the_baseline_is_the_run_configs_and_sets_run_config_keys():
    config = defaults()
    base = baseline(config)
    assert (base.local_epochs, base.learning_rate, base.batch_size) == (
        config["local-epochs"], config["learning-rate"], config["batch-size"])
    assert set(base.settings()) <= set(config)  # every key it sets is a run-config key


@pytest.mark.parametrize("field, value", [("local_epochs", 0), ("local_epochs", 10**6), ("learning_rate", -0.1),
                                          ("learning_rate", float("nan")), ("batch_size", 0), ("local_epochs", 2.5)])
def test_an_instruction_out_of_its_bounds_cannot_be_made(field, value):
    with pytest.raises(MessageError, match=field):
        TrainInstruction(**{"local_epochs": 5, "learning_rate": 0.1, "batch_size": 32, field: value})


def test_without_pacing_every_node_is_asked_the_baseline():
    pacer = Pacer(BASE)
    for node, seconds in ((1, 1.0), (2, 1.0), (3, 40.0)):
        pacer._sent[(1, node)] = BASE
        pacer.note(1, node, seconds)
    assert pacer.plan([1, 2, 3]) == {1: BASE, 2: BASE, 3: BASE}


def test_a_slow_node_is_asked_for_fewer_epochs_and_its_pace_is_learned_from_what_it_was_asked():
    pacer = Pacer(BASE, pace_factor=1.5)
    assert pacer.plan([1, 2, 3]) == {1: BASE, 2: BASE, 3: BASE}  # nothing known yet
    for node, seconds in ((1, 5.0), (2, 5.0), (3, 20.0)):  # 1 s, 1 s and 4 s an epoch
        pacer._sent[(1, node)] = BASE
        pacer.note(1, node, seconds)
    plans = pacer.plan([1, 2, 3])
    # median node: 5 epochs in 5 s; limit 1.5 x 5 = 7.5 s; node 3 at 4 s an epoch: 1 epoch
    assert plans[1] == plans[2] == BASE and plans[3].local_epochs == 1
    assert (plans[3].learning_rate, plans[3].batch_size) == (BASE.learning_rate, BASE.batch_size)
    pacer._sent[(2, 3)] = plans[3]
    pacer.note(2, 3, 4.0)  # one epoch in 4 s: still 4 s an epoch, not 0.8
    assert pacer.plan([1, 2, 3])[3].local_epochs == 1
    assert pacer.plan([3]) == {3: BASE}  # alone, nothing to compare it with


def test_each_train_message_carries_its_own_nodes_instruction_and_shares_the_model():
    strategy = make(pacer=Pacer(BASE, pace_factor=1.5))
    strategy.pacer._seconds_per_epoch.update({1: 1.0, 2: 1.0, 3: 4.0})
    messages = list(strategy.configure_train(2, GLOBAL, ConfigRecord({"server-round": 2}), FakeGrid([1, 2, 3])))
    by_node = {m.metadata.dst_node_id: m for m in messages}
    assert sorted(by_node) == [1, 2, 3]
    sent = {node: from_content(m.content, TrainInstruction) for node, m in by_node.items()}
    assert sent[1] == sent[2] == BASE and sent[3].local_epochs == 1
    for m in messages:
        assert m.metadata.message_type == "train"
        assert m.content["arrays"] is messages[0].content["arrays"]  # one model, not one copy per node
        assert dict(m.content["config"]) == {"server-round": 2}


def test_the_client_round_line_says_what_the_node_was_asked(capsys):
    strategy = make()
    list(strategy.configure_train(1, GLOBAL, ConfigRecord(), FakeGrid([1, 2])))
    capsys.readouterr()
    strategy.aggregate_train(1, [train_reply(1, 0.1), train_reply(2, 0.2)])
    lines = client_rounds(capsys.readouterr().out)
    assert [line["instruction"] for line in lines] == [
        {"local_epochs": 5, "learning_rate": 0.1, "batch_size": 32}] * 2


# --- the ClientApp's side ----------------------------------------------------------------------


def train_message(instruction_record: tuple[str, ConfigRecord] | None) -> Message:
    from app import task

    arrays = ArrayRecord(task.build_model(defaults()).state_dict())
    content = {"arrays": arrays, "config": ConfigRecord({"server-round": 1})}
    if instruction_record is not None:
        content[instruction_record[0]] = instruction_record[1]
    return Message(content=RecordDict(content), dst_node_id=1, message_type="train")


def context() -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 3}, state=RecordDict(),
                   run_config=dict(defaults()))


def test_the_clientapp_trains_as_the_instruction_says(capsys):
    instruction = TrainInstruction(local_epochs=2, learning_rate=0.05, batch_size=16)
    reply = client_app.train(train_message(to_config_record(instruction)), context())
    meta = metadata_of(reply.content, TrainProcessMetadata)
    assert list(meta.training_losses) == ["epoch_1", "epoch_2"]  # not the run config's 5
    [done] = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "local_train_done"]
    assert done["instruction"] == {"local_epochs": 2, "learning_rate": 0.05, "batch_size": 16}


@pytest.mark.parametrize("payload, says", [
    ({"local_epochs": 10**9, "learning_rate": 0.1, "batch_size": 32}, "local_epochs"),
    ({"local_epochs": 5, "learning_rate": 1e9, "batch_size": 32}, "learning_rate"),
    ({"local_epochs": 5, "learning_rate": 0.1}, "batch_size"),
    ({"local_epochs": 5, "learning_rate": 0.1, "batch_size": 32, "shell": "rm -rf /"}, "shell"),
])
def test_a_hostile_instruction_fails_the_reply_saying_which_field(payload, says, capsys):
    forged = ConfigRecord({"meta": cbor2.dumps({"kind": "train_instruction", "version": 1, **payload})})
    with pytest.raises(MessageError, match=says):
        client_app.train(train_message(("train_instruction", forged)), context())
    [invalid] = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "train_instruction_invalid"]
    assert says in invalid["error"]


def test_a_train_message_without_an_instruction_is_refused():
    with pytest.raises(MessageError):
        client_app.train(train_message(None), context())


def test_every_key_an_instruction_sets_is_read_by_training():
    """The instruction's settings reach task.train: a run config key it sets but training ignores
    would be an instruction that does nothing."""
    import inspect

    from app import task

    source = inspect.getsource(task.train)
    assert all(f'"{key}"' in source for key in BASE.settings())
    assert np.isfinite(BASE.learning_rate)
