"""The strategy: good, invalid, missing metadata and error replies, one line each."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from app.logging import configure_logging
from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record
from app.strategy import LoggingFedAdagrad, LoggingFedAvg, build_strategy
from tests.conftest import json_lines

RUN_ID = 4242
GLOBAL = ArrayRecord([np.zeros((2, 2), dtype=np.float32), np.zeros(3, dtype=np.float32)])


class FakeGrid:
    """Only what sampling asks of a Grid: the connected node IDs."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return self.node_ids


@pytest.fixture(autouse=True)
def server_identity():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, 0, 1
    configure_logging("json", "INFO")
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def instruction(node_id, phase="train"):
    return Message(content=RecordDict(), dst_node_id=node_id, message_type=phase)


def train_reply(node_id, value, examples=10, meta=TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}),
                arrays=None, metrics=None):
    content = {
        "arrays": arrays or ArrayRecord([np.full((2, 2), value, dtype=np.float32), np.full(3, value, dtype=np.float32)]),
        "metrics": MetricRecord(metrics or {"train_loss": value, "num-examples": examples}),
    }
    if isinstance(meta, bytes):
        content["train_metadata"] = ConfigRecord({"meta": meta})
    elif meta is not None:
        name, record = to_config_record(meta)
        content[name] = record
    return Message(content=RecordDict(content), reply_to=instruction(node_id))


def error_reply(node_id, phase="train"):
    return Message(Error(code=1, reason="ClientApp raised: out of memory"), reply_to=instruction(node_id, phase))


def client_rounds(out):
    return [e for e in json_lines(out) if e["event"] == "client_round"]


def summary(out, phase):
    [line] = [e for e in json_lines(out) if e["event"] == "round_summary" and e["phase"] == phase]
    return line


def started(strategy, phase="train", nodes=(1, 2, 3, 4, 5, 6)):
    config = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    list(config(1, GLOBAL, ConfigRecord(), FakeGrid(nodes)))
    return strategy


def test_good_bad_missing_and_error_replies(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_train_nodes=1))
    replies = [
        train_reply(1, value=1.0, examples=10),
        train_reply(2, value=4.0, examples=30),
        train_reply(3, value=100.0, meta=b"\xd9\x01\x02\x80"),  # a CBOR set: refused
        train_reply(4, value=100.0, meta=None),
        error_reply(5),
        train_reply(6, value=100.0, arrays=ArrayRecord([np.zeros((5, 5), dtype=np.float32)])),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)

    # Only nodes 1 and 2 are aggregated: (1*10 + 4*30) / 40 = 3.25
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((2, 2), 3.25))
    assert metrics["train_loss"] == pytest.approx(3.25)

    out = capsys.readouterr().out
    lines = {int(e["node_id"]): e for e in client_rounds(out)}  # IDs are logged as strings
    assert len(client_rounds(out)) == 6 and set(lines) == {1, 2, 3, 4, 5, 6}
    assert {n: e["status"] for n, e in lines.items()} == {
        1: "ok", 2: "ok", 3: "rejected", 4: "rejected", 5: "failed", 6: "rejected"}
    ok = lines[1]
    assert ok["run_id"] == str(RUN_ID) and ok["node_id"] == "1" and ok["server_round"] == 1 and ok["phase"] == "train"
    assert ok["training_time"] == 1.0 and ok["converged"] is True and ok["training_losses"] == {"epoch_1": 0.5}
    assert ok["metrics"]["num-examples"] == 10 and "error" not in ok
    assert "tag 258" in lines[3]["error"]
    assert "no 'train_metadata' ConfigRecord" in lines[4]["error"]
    assert "out of memory" in lines[5]["error"]
    assert "differ from the global model" in lines[6]["error"]
    for e in lines.values():
        assert e["timestamp"].endswith("Z") and e["level"] in ("info", "warning")

    s = summary(out, "train")
    assert (s["sampled"], s["replies"], s["ok"], s["rejected"], s["failed"], s["missing"]) == (6, 6, 2, 3, 1, 0)
    assert s["converged"] == 2 and s["training_time_min"] == s["training_time_max"] == 1.0
    assert s["metrics"]["train_loss"] == pytest.approx(3.25)


def test_evaluate_replies(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_evaluate_nodes=1), "evaluate", (1, 2, 3))

    def reply(node_id, acc, meta):
        content = {"metrics": MetricRecord({"eval_loss": 1 - acc, "eval_acc": acc, "num-examples": 10})}
        if meta is not None:
            name, record = to_config_record(meta)
            content[name] = record
        return Message(content=RecordDict(content), reply_to=instruction(node_id, "evaluate"))

    metrics = strategy.aggregate_evaluate(2, [
        reply(1, 0.8, EvaluateProcessMetadata(0.25)),
        reply(2, 0.6, EvaluateProcessMetadata(0.75)),
        reply(3, 0.0, TrainProcessMetadata(1.0, True, {})),  # the wrong kind for this phase
    ])
    assert metrics["eval_acc"] == pytest.approx(0.7)
    out = capsys.readouterr().out
    statuses = {int(e["node_id"]): e["status"] for e in client_rounds(out)}
    assert statuses == {1: "ok", 2: "ok", 3: "rejected"}
    s = summary(out, "evaluate")
    assert s["server_round"] == 2 and s["evaluation_time_min"] == 0.25 and s["evaluation_time_max"] == 0.75
    assert s["evaluation_time_mean"] == pytest.approx(0.5) and "converged" not in s


def test_round_goes_on_when_every_reply_is_bad(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_train_nodes=1), nodes=(1, 2))
    assert strategy.aggregate_train(3, [train_reply(1, 1.0, meta=b"junk"), error_reply(2)]) == (None, None)
    s = summary(capsys.readouterr().out, "train")
    assert (s["ok"], s["rejected"], s["failed"], s["training_time_mean"], s["metrics"]) == (0, 1, 1, None, None)


def test_missing_replies_are_counted(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_train_nodes=1), nodes=(1, 2, 3))
    strategy.aggregate_train(1, [train_reply(1, 1.0)])
    s = summary(capsys.readouterr().out, "train")
    assert (s["sampled"], s["replies"], s["missing"]) == (3, 1, 2)


def test_odd_metric_keys_are_rejected_not_fatal(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_train_nodes=1), nodes=(1, 2, 3))
    arrays, _ = strategy.aggregate_train(1, [
        train_reply(1, 1.0), train_reply(2, 3.0),
        train_reply(3, 9.0, metrics={"train_loss": 9.0, "num-examples": 10, "extra": 1.0}),
    ])
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[1], np.full(3, 2.0))
    statuses = {int(e["node_id"]): e["status"] for e in client_rounds(capsys.readouterr().out)}
    assert statuses == {1: "ok", 2: "ok", 3: "rejected"}


def test_zero_examples_is_rejected(capsys):
    strategy = started(LoggingFedAvg(run_id=RUN_ID, min_available_nodes=1, min_train_nodes=1), nodes=(1,))
    assert strategy.aggregate_train(1, [train_reply(1, 1.0, examples=0)]) == (None, None)
    [line] = client_rounds(capsys.readouterr().out)
    assert line["status"] == "rejected" and "positive 'num-examples'" in line["error"]


def test_fedadagrad_screens_too(capsys):
    strategy = build_strategy("FedAdagrad", run_id=RUN_ID, server_learning_rate=0.5,
                              min_available_nodes=1, min_train_nodes=1)
    assert isinstance(strategy, LoggingFedAdagrad) and strategy.eta == 0.5
    started(strategy, nodes=(1, 2))
    arrays, _ = strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 1.0, meta=None)])
    assert arrays is not None
    statuses = {int(e["node_id"]): e["status"] for e in client_rounds(capsys.readouterr().out)}
    assert statuses == {1: "ok", 2: "rejected"}


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="strategy must be one of fedavg, fedadagrad, got 'fedsgd'"):
        build_strategy("fedsgd", run_id=1, server_learning_rate=0.1)
