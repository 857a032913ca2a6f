"""scripts/report.py on a recorded log (a real `docker compose logs` of a 2-node,
2-round federation) and on made-up lines for what a healthy run lacks."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

RECORDED = ROOT / "tests" / "data" / "compose-logs.txt"  # serverapp + submit: every client line twice
RUN_ID = "1579832328207744185"


def report(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env={"LOG_FORMAT": "console", "PATH": ""})


def test_recorded_compose_logs_make_a_table_and_a_chart(tmp_path):
    result = report(str(RECORDED), "--png", str(tmp_path / "run.png"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Each client line was in the input twice (the ServerApp's log and its stream in
    # `submit`): counted once.
    assert out.startswith(f"run {RUN_ID}: 2 rounds, 2 clients, 8 ok, 0 rejected, 0 failed replies")
    assert "round 1: sampled 2, replies 2, missing 0" in out and "accuracy 0.733" in out
    assert "round 2:" in out and "accuracy 0.953" in out
    for node in ("1676274095056139523", "7515519986375015641"):
        assert out.count(node) == 2  # one row per round
    assert "2.301 -> 0.431" in out  # first and last epoch loss of a client
    png = (tmp_path / "run.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def line(**fields) -> str:
    return json.dumps({"timestamp": "2026-11-24T00:00:00Z", "level": "info", "logger": "app.strategy",
                       "run_id": "7", **fields})


def client(node: str, seconds: float, status: str = "ok", **extra) -> str:
    fields = {"training_time": seconds, "converged": False, "training_losses": {"epoch_1": 1.0, "epoch_2": 0.5}}
    return line(event="client_round", server_round=1, phase="train", node_id=node, status=status,
                **(fields if status == "ok" else {"error": extra.pop("error")}), **extra)


def test_stragglers_rejections_and_missing_replies_are_shown():
    lines = [
        line(event="round_summary", server_round=1, phase="train", sampled=5, replies=4, missing=1,
             duration_s=12.0, converged=0),
        client("11", 1.0), client("12", 1.1), client("13", 4.0),
        client("14", 0, status="rejected", error="CBOR tag 258 is not allowed"),
        "serverapp-1  | not json at all", line(event="client_round"),  # noise is skipped
    ]
    result = report("--run-id", "7", stdin="\n".join(lines))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 ok, 1 rejected" in out and "sampled 5, replies 4, missing 1" in out
    rows = {row.split()[0]: row for row in out.splitlines() if row.strip()[:2] in ("11", "12", "13", "14")}
    assert "straggler" in rows["13"] and "straggler" not in rows["11"]
    assert "train rejected: CBOR tag 258 is not allowed" in rows["14"]
    assert "1.000 -> 0.500" in rows["11"]


def test_no_run_in_the_input_is_an_error():
    result = report(stdin="hello\n")
    assert result.returncode == 1 and "no client_round" in result.stderr
    result = report(str(RECORDED), "--run-id", "42")
    assert result.returncode == 1 and RUN_ID in result.stderr
