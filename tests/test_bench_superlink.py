"""make bench-superlink's reading of a run (scripts/bench_superlink.py), on lines shaped as the
ServerApp logs them: which replies count as lost, and a table that says what broke."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench_superlink  # noqa: E402


def client_round(node: int, server_round: int, phase: str, status: str = "ok", reason: str | None = None) -> dict:
    return {"event": "client_round", "node_id": node, "server_round": server_round, "phase": phase,
            "status": status, "reason": reason}


def summary(server_round: int, phase: str, seconds: float) -> dict:
    return {"event": "round_summary", "server_round": server_round, "phase": phase, "duration_s": seconds}


def test_replies_lost_count_only_the_exchanges_that_ran():
    lines = [client_round(n, 1, "train") for n in (1, 2, 3)] + [summary(1, "train", 12.34)]
    lines += [client_round(1, 2, "train"), client_round(2, 2, "train", "missing", "no_reply"), summary(2, "train", 40.0)]
    result = bench_superlink.replies(lines, 3)  # round 2: node 3 never answered, node 2 logged missing
    assert result == {"replies_lost": 2, "exchanges_done": 2, "not_ok": {"missing:no_reply": 1},
                      "train_round_s": [12.3, 40.0]}  # the final evaluation never ran: not counted as lost


def test_the_table_names_a_size_that_broke_nodes_never_online_and_a_container_that_ended():
    measured = {"nodes": 250, "shed": None, "status": "running after 600 s (stopped)", "online_s": 40.0, "online": 240,
                "run_s": 600.0,
                "idle_pull_p50_p99": [0.1, 2.0], "run_pull_p50_p99": [0.5, 30.0], "train_round_s": [], "replies_lost": 0,
                "max_offline": 3, "heartbeat_failures": 7, "shed_503": 100, "superlink_500s": 2,
                "superlink_cores_idle": 0.9, "superlink_cores_run": 0.95, "superlink_peak_mib": 400,
                "gateway_cores_idle": 0.2, "gateway_cores_run": 0.3, "serverapp_cores_run": float("nan"),
                "fleet_cores_idle": 0.3, "fleet_cores_run": 0.4, "ended": {"serverapp": "exited exit=1 oom=false"}}
    text = bench_superlink.table([measured, {"nodes": 500, "shed": 0, "status": "broke: compose up failed"}])
    rows = text.splitlines()
    assert rows[1].startswith("250 | default | 40.0 (240 only)") and "serverapp ended: exited exit=1" in rows[1]
    assert rows[2].startswith("500 | none") and rows[2].endswith("broke: compose up failed")
