"""One exchange a round (run config one-exchange): each train reply carries the received model's
evaluation on the site's validation split, and the evaluate phase asks the nodes after the last
round only. Whole runs of the real ServerApp and ClientApps in one process
(scripts/direct_federation.py); in Docker, tests/test_deployment.py."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import direct_federation  # noqa: E402

ROUNDS, NODES = 3, 3


def client_lines(events: list[dict], phase: str) -> list[dict]:
    return [e for e in events if e.get("event") == "client_round" and e["phase"] == phase]


@pytest.fixture(scope="module")
def runs():
    """The same run (same seed, same sites) with one exchange a round and with two."""
    found = {}
    for one in (True, False):
        events, failure = direct_federation.run({"num-server-rounds": ROUNDS, "one-exchange": one, "min-nodes": NODES,
                                                 "local-epochs": 2}, nodes=NODES)
        assert failure is None, failure
        found[one] = events
    return found


def test_the_evaluate_phase_asks_the_nodes_after_the_last_round_only(runs):
    one, two = runs[True], runs[False]
    assert {e["server_round"] for e in client_lines(one, "evaluate")} == {ROUNDS}
    assert {e["server_round"] for e in client_lines(two, "evaluate")} == set(range(1, ROUNDS + 1))
    summaries = [(e["server_round"], e["phase"]) for e in one if e.get("event") == "round_summary"]
    assert summaries == [(r, "train") for r in range(1, ROUNDS + 1)] + [(ROUNDS, "evaluate")]
    assert all(e["status"] == "ok" for e in client_lines(one, "train") + client_lines(one, "evaluate"))


def test_each_train_reply_evaluates_the_model_of_the_round_before(runs):
    one, two = runs[True], runs[False]
    trained = client_lines(one, "train")
    assert len(trained) == ROUNDS * NODES
    assert all(e["evaluated_model"] == e["server_round"] - 1 for e in trained)
    assert all({"train_loss", "eval_loss", "eval_acc", "num-examples"} == set(e["metrics"]) for e in trained)
    # The same models as the two-exchange run's: round N's train reply saw what round N-1's
    # evaluate phase saw, on the same node (to float rounding: torch's sums are not ordered alike).
    evaluated = {(e["server_round"], e["node_id"]): e["metrics"] for e in client_lines(two, "evaluate")}
    for e in trained:
        if e["server_round"] > 1:
            before = evaluated[(e["server_round"] - 1, e["node_id"])]
            assert e["metrics"]["eval_acc"] == before["eval_acc"]
            assert e["metrics"]["eval_loss"] == pytest.approx(before["eval_loss"], rel=1e-5)
    # Two exchanges: the train lines say nothing of an evaluation
    assert all("evaluated_model" not in e and "eval_acc" not in e["metrics"] for e in client_lines(two, "train"))


def test_the_model_the_run_ends_with_is_the_same(runs):
    assert direct_federation.accuracy(runs[True]) == direct_federation.accuracy(runs[False]) > 0.8
