"""Participants that lie, against the real compose federation (tests/test_faults.py's).

5 SuperNodes kept up for both runs, in a module of their own so that the 3-node
federation of test_faults.py is down by then (an idle federation costs this machine a
third of a core): a run in which every reply is bad fails loudly; the SuperLink
restarted (the run stays listed, the nodes rejoin); then a run in which two ClientApps
send NaN, Inf, lying shapes, dtypes and encodings, absurd example counts and updates
scaled x1e6, every one rejected with its reason while the model still learns.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests import rogue_app as rogue_app_dir
from tests.test_faults import Federation, client_rounds, outcome, running

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def five_nodes(images):
    yield from running(5)


@pytest.fixture(scope="module")
def rogue_app(tmp_path_factory) -> Path:
    """This app with a lying ClientApp: tests/rogue_app/rogue_client.py."""
    return rogue_app_dir.assemble(tmp_path_factory.mktemp("rogue-app"))


# Federated evaluation off (the server evaluates the model): half the ClientApp starts.
BASE = ("num-server-rounds=3 expected-nodes=5 min-nodes=3 min-replies=2 fraction-train=1.0 "
        "fraction-evaluate=0 outlier-factor=10")
# Partitions 0 and 1 lie in every round, each round differently.
ATTACKS = {"0": ["nan", "shape", "scale"], "1": ["inf", "examples", "dtype"]}
EXPECTED_REASON = {"nan": "array_nonfinite", "inf": "array_nonfinite", "shape": "array_shape",
                   "scale": "outlier_update", "examples": "bad_example_count", "dtype": "array_dtype"}


def final_accuracy(fed: Federation, run_id: str) -> float:
    [finished] = [e for e in fed.events(run_id) if e["event"] == "run_finished"]
    return finished["accuracy"]


def test_a_run_in_which_every_reply_is_bad_fails_loudly(five_nodes, rogue_app):
    fed = five_nodes
    everyone_lies = " ".join(f"{p}=nan" for p in range(5))
    result = fed.submit(f'num-server-rounds=1 min-nodes=3 fraction-train=1.0 fraction-evaluate=0 '
                        f'attacks="{everyone_lies}"', rogue_app)
    assert result.returncode != 0
    line = outcome(result)
    assert line["status"] == "finished:failed" and line["level"] == "error"
    [failed] = [e for e in fed.events(line["run_id"]) if e["event"] == "run_failed"]
    assert "none of the 1 rounds aggregated an update" in failed["reason"]
    skipped = [e for e in fed.events(line["run_id"]) if e["event"] == "round_skipped"]
    assert [(e["server_round"], e["reason"]) for e in skipped] == [(1, "too_few_accepted")]
    fed.earlier_run = line["run_id"]  # for the restart below


def test_liars_are_rejected_and_a_restarted_superlink_keeps_its_runs(five_nodes, rogue_app):
    fed = five_nodes
    # The SuperLink restarted between two runs: the one before (the test above) is still
    # listed, and the nodes rejoin for the next.
    assert fed.earlier_run in {r["run-id"] for r in fed.runs()}
    fed.compose("restart", "superlink", timeout=120)
    fed.compose("up", "-d", "--no-build", "--wait", "superlink", timeout=120)
    assert fed.earlier_run in {r["run-id"] for r in fed.runs()}

    attacks = " ".join(f"{p}={'/'.join(steps)}" for p, steps in ATTACKS.items())
    lying = fed.submit(f'{BASE} attacks="{attacks}"', rogue_app)
    assert lying.returncode == 0, lying.stdout[-3000:]
    lying_run = outcome(lying)["run_id"]
    lines = client_rounds(fed.events(lying_run))
    partition_of = {fed.node_id(replica): replica - 1 for replica in range(1, 6)}  # compose.yaml's rule
    by_partition: dict[str, dict[int, dict]] = defaultdict(dict)
    for (server_round, phase, node), line in lines.items():
        if phase == "train":
            by_partition[partition_of[node]][server_round] = line
    seen = set()
    for partition, steps in ATTACKS.items():
        for server_round, attack in enumerate(steps, 1):
            line = by_partition[int(partition)][server_round]
            assert (line["status"], line["reason"]) == ("rejected", EXPECTED_REASON[attack]), (attack, line)
            seen.add(attack)
    assert seen == set(EXPECTED_REASON)
    honest = [line for p, rounds in by_partition.items() if p not in (0, 1) for line in rounds.values()]
    assert len(honest) == 9 and {line["status"] for line in honest} == {"ok"}

    lying_accuracy = final_accuracy(fed, lying_run)
    print(f"\naccuracy with 2 liars of 5: {lying_accuracy:.4f}")
    # The liars' updates never count: the model learns from the 3 honest partitions (60 % of
    # the data), never near chance (0.1) or NaN, where FedAvg with their updates would. (A
    # clean run's accuracy next to it: make bench-faults, docs/figures.md.)
    assert lying_accuracy > 0.85
