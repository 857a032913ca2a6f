"""The fake SuperNodes (scripts/fake_fleet/): their replies pass the real strategy's
screening, their keys are what register_supernodes reads, and (marked simulation) a real run of
this app completes against them on a local SuperLink (scripts/local_fleet/)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from app import task
from app.run_config import defaults
from app.server_app import expected_metrics, strategy_from
from scripts import fake_fleet as fake
from scripts.fake_fleet import keys as fake_keys
from scripts.fake_fleet import node as fake_node
from scripts.fake_fleet import records as fake_records
from tests.conftest import ROOT, json_lines, server_identity

sys.path.append(str(ROOT / "docker"))  # last: register_supernodes imports its neighbour `submit`; shadows nothing
import register_supernodes  # noqa: E402

RUN_ID = 4343
SETTINGS = fake.Settings("127.0.0.1:1")
NODES = list(range(1, 21))


@pytest.fixture(autouse=True)
def identity():
    yield from server_identity(RUN_ID)


def test_metric_names_are_the_apps():
    assert (fake.TRAIN_METRICS, fake.EVALUATE_METRICS) == (task.TRAIN_METRICS, task.EVALUATE_METRICS)


def run_config(**overrides) -> dict:
    return {**defaults(), "model": "mlp", "mlp-hidden": 8, "min-nodes": len(NODES), "min-replies": len(NODES),
            "node-wait-timeout": 0, "server-test-set": "none", **overrides}


class Grid:
    def get_node_ids(self):
        return NODES


def asked(strategy, config: dict, phase: str, server_round: int = 1) -> list[Message]:
    """The messages the real strategy sends each node, as a node pulls them."""
    arrays = ArrayRecord(task.build_model(config).state_dict())
    configure = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    return list(configure(server_round, arrays, ConfigRecord(), Grid()))


@pytest.mark.parametrize("one_exchange", [True, False])
def test_train_replies_pass_screening_and_the_round_checks(capsys, one_exchange):
    """Every defence on (the run config's defaults): no reply is rejected, none is clipped."""
    config = run_config(**{"one-exchange": one_exchange})
    strategy = strategy_from(config, RUN_ID)
    messages = asked(strategy, config, "train")
    assert all("train_instruction" in m.content for m in messages)  # sent; the fake nodes ignore it
    replies = [fake.reply_to(m, config, m.metadata.dst_node_id, SETTINGS, 0.5) for m in messages]
    arrays, metrics = strategy.aggregate_train(1, replies)
    lines = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "client_round"]
    assert [(e["status"], e.get("reason"), "clipped" in e) for e in lines] == [("ok", None, False)] * len(NODES)
    assert set(lines[0]["metrics"]) == set(expected_metrics(config)["train"]) | {"num-examples"}
    assert arrays is not None and set(metrics) == set(expected_metrics(config)["train"])


def test_the_update_is_a_common_step_plus_a_little_noise():
    config = run_config()
    [message, *_] = asked(strategy_from(config, RUN_ID), config, "train")
    sent = message.content["arrays"].to_numpy_ndarrays()
    steps = [np.concatenate([(r - s).ravel() for r, s in zip(
        fake.train_reply(message, config, node, SETTINGS, 0.1).content["arrays"].to_numpy_ndarrays(), sent)])
        for node in (1, 2)]
    cosine = steps[0] @ steps[1] / (np.linalg.norm(steps[0]) * np.linalg.norm(steps[1]))
    assert 0.95 < cosine < 1.0  # the same direction, not the same update


def test_evaluate_replies_pass_screening(capsys):
    config = run_config()
    strategy = strategy_from(config, RUN_ID)
    strategy._num_rounds = 1  # the last round: one-exchange asks for the evaluate phase there
    messages = asked(strategy, config, "evaluate")
    metrics = strategy.aggregate_evaluate(1, [fake.reply_to(m, config, m.metadata.dst_node_id, SETTINGS, 0.1)
                                              for m in messages])
    lines = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "client_round"]
    assert [e["status"] for e in lines] == ["ok"] * len(NODES) and set(metrics) == {"eval_loss", "eval_acc"}


def test_another_message_type_gets_an_error_reply():
    reply = fake.reply_to(Message(content=RecordDict(), dst_node_id=1, message_type="query"), {}, 1,
                          SETTINGS, 0.0)
    assert reply.has_error() and "query" in reply.error.reason


def test_keys_are_what_register_supernodes_registers(tmp_path):
    paths = fake.make_keys(tmp_path, 3)
    registered = register_supernodes.public_keys(tmp_path)
    assert sorted(registered.values()) == ["fake-0001", "fake-0002", "fake-0003"]
    for path in paths:
        private, public = fake_keys._load_key(str(path))
        assert public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        assert (path.stat().st_mode & 0o077) == 0  # a private key readable by its owner alone


def test_an_error_flower_does_not_retry_on_a_pull_ends_the_node(monkeypatch):
    """As Flower's SuperNode ends (and its supervisor restarts it): the loop returns, run_node
    deactivates and activates again. Empty pulls before it sleep and pull again."""
    monkeypatch.setattr(fake_records, "RECORDS", {kind: [] for kind in fake.KINDS})  # record() writes there
    answers = iter([None, None, RuntimeError("500 Internal Server Error")])

    def receive():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    fake_node._loop(7, (receive,), fake.Settings("127.0.0.1:1", idle_sleep=0.01), threading.Event())
    assert [row[3] for row in fake_records.RECORDS["pull"]] == [False, False]
    assert [(row[1], row[2]) for row in fake_records.RECORDS["failure"]] == [(7, "exit")]


def test_node_keys_need_tls():
    with pytest.raises(ValueError, match="need TLS"):
        fake.FakeFleet(fake.Settings("127.0.0.1:1"), [ROOT / "fake-0001.key"])


def test_summary():
    records = {kind: [] for kind in fake.KINDS}
    records["pull"] = [(10.0 + i, 0, 0.01 * (i + 1), i == 99) for i in range(100)]
    records["http"] = [(10.0, "send-node-heartbeat", 5.0, "ReadTimeout"), (11.0, "pull-messages", 0.1, "500"),
                       (12.0, "pull-messages", 0.1, "ok")]
    records["reply"] = [(50.0, 3, "train", 1.5)]
    summary = fake.summarize(records)
    assert (summary["pulls"], summary["pulls_with_message"]) == (100, 1)
    latency = (summary["pull_latency_s_p50"], summary["pull_latency_s_p99"], summary["pull_latency_s_max"])
    assert latency == (0.5, 0.99, 1.0)
    assert summary["errors_by_kind"] == {"send-node-heartbeat ReadTimeout": 1, "pull-messages 500": 1}
    assert summary["heartbeat_failures"] == 1 and summary["replies_pushed"] == {"train": 1}
    assert fake.summarize(records, since=20, until=29)["pulls"] == 10
    assert fake.percentile([], 50) is None


@pytest.mark.simulation
def test_a_run_completes_against_fake_nodes_on_a_local_superlink():
    """A real SuperLink (TLS, node keys registered through the Control API), 6 fake nodes, a real
    run of this app: finished:completed, and every node `ok` in every round's client_round lines."""
    result = subprocess.run([sys.executable, "-m", "scripts.local_fleet", "check", "--nodes", "6", "--idle", "5",
                             "--processes", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    [summary] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"nodes"')]
    assert summary["outcome"] == "finished:completed" and summary["every_node_ok"] and summary["activated"] == 6
    assert summary["run"]["replies_pushed"] == {"train": 12, "evaluate": 6}
    assert not summary["run"]["errors_by_kind"] and not summary["node_failures"]
