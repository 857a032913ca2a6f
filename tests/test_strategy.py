"""The strategy: screened replies, one line each; rounds that skip, runs that fail, robust aggregators."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record
from app.quorum import RunFailed
from app.aggregators import STRATEGIES, ScreenedFedAdagrad, build_strategy
from app.strategy import ScreenedStrategy
from tests.conftest import json_lines, server_identity

RUN_ID = 4242
EXPECTED = {"train": ("train_loss",), "evaluate": ("eval_loss", "eval_acc")}
GLOBAL = ArrayRecord([np.zeros((2, 2), dtype=np.float32), np.zeros(3, dtype=np.float32)])


class FakeGrid:
    """Only what sampling asks of a Grid: the connected node IDs."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return self.node_ids


@pytest.fixture(autouse=True)
def identity():
    yield from server_identity(RUN_ID)


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


def error_reply(node_id, phase="train", code=2, reason="ClientApp raised: out of memory"):
    return Message(Error(code=code, reason=reason), reply_to=instruction(node_id, phase))


# Every defence off, so that each test turns on the one it is about (the strategy's own
# defaults are the run config's, with all of them on).
DEFENCES_OFF = {"outlier_factor": 0.0, "min_cosine": -1.0, "clip_factor": 0.0, "exclude_after": 0}


def make(name="fedavg", **options) -> ScreenedStrategy:
    defaults = {"run_id": RUN_ID, "expected_metrics": EXPECTED, "min_available_nodes": 1, "min_train_nodes": 1,
                "min_evaluate_nodes": 1, "min_replies": 1, "node_wait_timeout": 0, **DEFENCES_OFF}
    return build_strategy(name, **{**defaults, **options})


def client_rounds(out):
    return [e for e in json_lines(out) if e["event"] == "client_round"]


def summary(out, phase):
    [line] = [e for e in json_lines(out) if e["event"] == "round_summary" and e["phase"] == phase]
    return line


def started(strategy, phase="train", nodes=(1, 2, 3, 4, 5, 6)):
    config = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    list(config(1, GLOBAL, ConfigRecord(), FakeGrid(nodes)))
    return strategy


def lines_by_node(out):
    return {int(e["node_id"]): e for e in client_rounds(out)}  # IDs are logged as strings


def test_good_bad_missing_and_error_replies(capsys):
    strategy = started(make())
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
    lines = lines_by_node(out)
    assert len(client_rounds(out)) == 6 and set(lines) == {1, 2, 3, 4, 5, 6}
    assert {n: (e["status"], e.get("reason")) for n, e in lines.items()} == {
        1: ("ok", None), 2: ("ok", None), 3: ("rejected", "bad_metadata"), 4: ("rejected", "bad_metadata"),
        5: ("failed", "clientapp_raised"), 6: ("rejected", "array_names")}
    ok = lines[1]
    assert ok["run_id"] == str(RUN_ID) and ok["node_id"] == "1" and ok["server_round"] == 1 and ok["phase"] == "train"
    assert ok["training_time"] == 1.0 and ok["converged"] is True and ok["training_losses"] == {"epoch_1": 0.5}
    assert ok["metrics"]["num-examples"] == 10 and "error" not in ok
    assert ok["update_norm"] == pytest.approx(np.sqrt(7)) and ok["update_distance"] == pytest.approx(np.sqrt(7))
    assert "tag 258" in lines[3]["error"]
    assert "no 'train_metadata' ConfigRecord" in lines[4]["error"]
    assert "out of memory" in lines[5]["error"]
    for e in lines.values():
        assert e["timestamp"].endswith("Z") and e["level"] in ("info", "warning") and e["schema_version"] == 2

    s = summary(out, "train")
    assert (s["sampled"], s["replies"], s["ok"], s["rejected"], s["failed"], s["missing"]) == (6, 6, 2, 3, 1, 0)
    assert s["converged"] == 2 and s["training_time_min"] == s["training_time_max"] == 1.0
    assert s["metrics"]["train_loss"] == pytest.approx(3.25)


def test_hostile_arrays_never_reach_the_aggregate(capsys):
    strategy = started(make(), nodes=(1, 2, 3, 4))
    nan = ArrayRecord([np.full((2, 2), np.nan, np.float32), np.zeros(3, np.float32)])
    arrays, _ = strategy.aggregate_train(1, [
        train_reply(1, 1.0), train_reply(2, 3.0), train_reply(3, 0.0, arrays=nan),
        train_reply(4, 1.0, examples=10**30),  # would replace the global model under FedAvg
    ])
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((2, 2), 2.0))
    lines = lines_by_node(capsys.readouterr().out)
    assert (lines[3]["reason"], lines[4]["reason"]) == ("array_nonfinite", "bad_example_count")


def test_evaluate_replies(capsys):
    strategy = started(make(), "evaluate", (1, 2, 3))

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


def test_a_round_without_enough_accepted_replies_is_skipped(capsys):
    strategy = started(make(min_replies=2), nodes=(1, 2))
    assert strategy.aggregate_train(3, [train_reply(1, 1.0), error_reply(2)]) == (None, None)
    out = capsys.readouterr().out
    [skipped] = [e for e in json_lines(out) if e["event"] == "round_skipped"]
    assert skipped["reason"] == "too_few_accepted" and skipped["server_round"] == 3 and skipped["level"] == "warning"
    s = summary(out, "train")
    assert (s["ok"], s["failed"], s["metrics"]) == (1, 1, None)
    assert strategy.rounds_aggregated == 0


def test_missing_replies_are_logged_with_the_node_asked(capsys):
    strategy = started(make(), nodes=(1, 2, 3))
    strategy.aggregate_train(1, [
        train_reply(1, 1.0),
        error_reply(2, code=4, reason="no reply within the round's wait"),  # app/quorum.py's NO_REPLY
        error_reply(3, code=5, reason="Node unavailable"),                   # the SuperLink's, re-addressed
    ])
    out = capsys.readouterr().out
    lines = lines_by_node(out)
    assert (lines[2]["status"], lines[2]["reason"]) == ("missing", "no_reply")
    assert (lines[3]["status"], lines[3]["reason"]) == ("missing", "node_unavailable")
    s = summary(out, "train")
    assert (s["sampled"], s["replies"], s["missing"], s["ok"]) == (3, 1, 2, 1)


def test_an_exception_in_aggregation_skips_the_round_not_the_run(capsys, monkeypatch):
    strategy = started(make(), nodes=(1, 2))

    def explode(*args, **kwargs):
        raise ZeroDivisionError("a bug in aggregation")

    monkeypatch.setattr("flwr.serverapp.strategy.FedAvg.aggregate_train", explode)
    assert strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 2.0)]) == (None, None)
    [skipped] = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "round_skipped"]
    assert skipped["reason"] == "round_failed" and "ZeroDivisionError: a bug in aggregation" in skipped["detail"]


def test_a_non_finite_aggregate_fails_the_run(capsys, monkeypatch):
    # Screened inputs are finite; an aggregator (FedAdagrad diverging, a bug) can still make NaN.
    nan = ArrayRecord([np.full((2, 2), np.nan, np.float32), np.zeros(3, np.float32)])
    monkeypatch.setattr("flwr.serverapp.strategy.FedAvg.aggregate_train", lambda *args: (nan, None))
    strategy = started(make(), nodes=(1, 2))
    with pytest.raises(RunFailed, match="NaN or infinite"):
        strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 1.0)])


def test_the_outlier_rule_rejects_a_scaled_update(capsys):
    strategy = started(make(outlier_factor=5.0), nodes=(1, 2, 3, 4))
    arrays, _ = strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 1.1), train_reply(3, 0.9),
                                             train_reply(4, 1e6)])
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((2, 2), 1.0), rtol=1e-5)
    lines = lines_by_node(capsys.readouterr().out)
    assert lines[4]["status"] == "rejected" and lines[4]["reason"] == "outlier_update"
    assert {lines[n]["status"] for n in (1, 2, 3)} == {"ok"}


def test_with_every_defence_at_zero_a_scaled_update_moves_the_mean(capsys):
    # make() turns every defence off; the product's defaults are the run config's (pyproject.toml).
    strategy = started(make(), nodes=(1, 2, 3))
    arrays, _ = strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 1.0), train_reply(3, 1e6)])
    assert arrays.to_numpy_ndarrays()[0][0, 0] > 1e5


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum", "multikrum"])
def test_robust_aggregators_outvote_one_scaled_update(name, capsys):
    strategy = started(make(name, num_malicious=1, trimmed_beta=0.2), nodes=(1, 2, 3, 4, 5))
    arrays, _ = strategy.aggregate_train(1, [train_reply(n, 1.0 + 0.01 * n) for n in (1, 2, 3, 4)]
                                            + [train_reply(5, 1e6)])
    assert abs(arrays.to_numpy_ndarrays()[0][0, 0] - 1.0) < 0.1
    assert {e["status"] for e in client_rounds(capsys.readouterr().out)} == {"ok"}  # screened in, outvoted


def test_bulyan_with_too_few_updates_skips_the_round(capsys):
    strategy = started(make("bulyan", num_malicious=1), nodes=(1, 2, 3))  # needs 4f + 3 = 7
    assert strategy.aggregate_train(1, [train_reply(n, 1.0) for n in (1, 2, 3)]) == (None, None)
    [skipped] = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "round_skipped"]
    assert skipped["reason"] == "aggregator_declined"


def test_fedadagrad_screens_too(capsys):
    strategy = make("FedAdagrad", server_learning_rate=0.5)
    assert isinstance(strategy, ScreenedFedAdagrad) and strategy.eta == 0.5
    started(strategy, nodes=(1, 2))
    arrays, _ = strategy.aggregate_train(1, [train_reply(1, 1.0), train_reply(2, 1.0, meta=None)])
    assert arrays is not None
    statuses = {int(e["node_id"]): e["status"] for e in client_rounds(capsys.readouterr().out)}
    assert statuses == {1: "ok", 2: "rejected"}


def test_krum_tolerates_num_malicious_as_multikrum_and_bulyan_do():
    for name in ("krum", "multikrum", "bulyan"):
        assert make(name, num_malicious=3).num_malicious_nodes == 3, name
    assert make("krum", num_malicious=3).num_nodes_to_select == 1  # Krum's own: the one best update


def test_every_strategy_is_screened():
    for name, cls in STRATEGIES.items():
        assert issubclass(cls, ScreenedStrategy), name


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="strategy must be one of fedavg, fedadagrad, fedmedian, .*got 'fedsgd'"):
        make("fedsgd")


def test_a_site_whose_data_cannot_be_used_is_failed_with_the_files_problem(capsys):
    strategy = started(make(), nodes=(1, 2))
    reason = ("<class 'app.site_data.SiteDataError'>:<'/data/train.npz: labels must be in 0..9; "
              "sample 7 has 10 (run config num-classes)'>")
    strategy.aggregate_train(1, [train_reply(1, value=1.0, examples=10), error_reply(2, reason=reason)])
    lines = lines_by_node(capsys.readouterr().out)
    assert (lines[2]["status"], lines[2]["reason"]) == ("failed", "site_data_invalid")
    assert "/data/train.npz: labels must be in 0..9" in lines[2]["error"]
    assert lines[1]["status"] == "ok"


def test_label_counts_are_logged_only_for_a_site_that_sent_them(capsys):
    strategy = started(make(), nodes=(1, 2))
    shared = TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, label_counts={"0": 12, "7": 30})
    strategy.aggregate_train(1, [train_reply(1, value=1.0, meta=shared), train_reply(2, value=2.0)])
    lines = lines_by_node(capsys.readouterr().out)
    assert lines[1]["label_counts"] == {"0": 12, "7": 30}
    assert "label_counts" not in lines[2]


# --- Flower's simulation runtime on a Ray cluster (docs/ray.md) ------------------------------

RAY_NODE = {"ray_node_id": "3c5a9d0e8f1b2a4c6d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e", "ray_node_ip": "10.213.47.5"}
ACTOR_DIED = ("<class 'ray.exceptions.ActorDiedError'>:<'The actor died unexpectedly before finishing this task."
              "\n\tclass_name: ClientAppActor\n\tip: 10.213.47.5'>")
ACTOR_UNAVAILABLE = ("<class 'ray.exceptions.ActorUnavailableError'>:<'The actor 3adb55 is unavailable: "
                     "The actor is temporarily unavailable: RpcError'>")


def test_the_ray_node_that_ran_a_clientapp_is_in_its_line(capsys):
    strategy = started(make(), nodes=(1, 2))
    on_ray = TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}, **RAY_NODE)
    strategy.aggregate_train(1, [train_reply(1, value=1.0, meta=on_ray), train_reply(2, value=2.0)])
    lines = lines_by_node(capsys.readouterr().out)
    assert {k: lines[1][k] for k in RAY_NODE} == RAY_NODE and lines[1]["status"] == "ok"
    assert "ray_node_id" not in lines[2] and "ray_node_ip" not in lines[2]  # a deployment's line is as before


def test_an_unreachable_ray_actor_fails_its_reply_only(capsys):
    strategy = started(make(), nodes=(1, 2))
    strategy.aggregate_train(1, [train_reply(1, value=1.0), error_reply(2, code=0, reason=ACTOR_UNAVAILABLE)])
    lines = lines_by_node(capsys.readouterr().out)
    assert (lines[2]["status"], lines[2]["reason"]) == ("failed", "ray_actor_unavailable")


@pytest.mark.parametrize("phase", ["train", "evaluate"])
def test_a_dead_ray_actor_stops_the_run_with_a_clear_reason(capsys, phase):
    strategy = started(make(), phase, nodes=(1, 2))
    aggregate = strategy.aggregate_train if phase == "train" else strategy.aggregate_evaluate
    ok = train_reply(1, value=1.0) if phase == "train" else Message(content=RecordDict({
        "metrics": MetricRecord({"eval_loss": 0.5, "eval_acc": 0.5, "num-examples": 10}),
        **dict([to_config_record(EvaluateProcessMetadata(0.1))])}), reply_to=instruction(1, "evaluate"))
    with pytest.raises(RunFailed, match=rf"round 4 \({phase}\): the Ray actor running 1 ClientApp\(s\) died.*"
                                        r"10\.213\.47\.5.*runs on the Ray workers that remain"):
        aggregate(4, [ok, error_reply(2, phase, code=0, reason=ACTOR_DIED)])
    out = capsys.readouterr().out
    assert (lines_by_node(out)[2]["status"], lines_by_node(out)[2]["reason"]) == ("failed", "ray_actor_died")
    assert summary(out, phase)["failed"] == 1  # the round's lines come first, then the run stops
