"""One real `flwr run .`: Flower's simulation runtime, 10 virtual SuperNodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, json_lines

LOCAL_SUPERLINK_PORT = 39091  # fixed by Flower for its managed local SuperLink
ROUNDS = 2


@pytest.fixture
def flwr_home(tmp_path):
    if socket.socket().connect_ex(("127.0.0.1", LOCAL_SUPERLINK_PORT)) == 0:
        pytest.fail(f"a local SuperLink already listens on {LOCAL_SUPERLINK_PORT} (left by an earlier `flwr run`); "
                    "stop it with: pkill -f 'flower-superlink --insecure --simulation'")
    home = tmp_path / "flwr-home"
    home.mkdir()
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    yield home
    # `flwr run` leaves its managed SuperLink running; stop the one this test started.
    subprocess.run(["pkill", "-f", str(home)], check=False)


@pytest.mark.simulation
def test_local_simulation_logs_one_line_per_client_per_round(flwr_home, tmp_path):
    bin_dir = Path(sys.executable).parent  # flwr, and the flower-superlink it starts
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FLWR_HOME": str(flwr_home), "APP_OUTPUT_DIR": str(tmp_path),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "LOG_FORMAT": "json", "RAY_ADDRESS": "local"}
    result = subprocess.run(
        [str(bin_dir / "flwr"), "run", ".", "--stream", "--run-config", f"num-server-rounds={ROUNDS}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    events = json_lines(result.stdout)  # fails on any line that is not JSON

    rounds = [e for e in events if e["event"] == "client_round"]
    assert rounds and all(e["status"] == "ok" for e in rounds)
    per_client = Counter((e["server_round"], e["phase"], e["node_id"]) for e in rounds)
    assert set(per_client.values()) == {1}, "a client was logged twice in one round and phase"
    summaries = {(e["server_round"], e["phase"]): e for e in events if e["event"] == "round_summary"}
    assert set(summaries) == {(r, p) for r in range(1, ROUNDS + 1) for p in ("train", "evaluate")}
    for (server_round, phase), s in summaries.items():
        logged = sum(1 for key in per_client if key[:2] == (server_round, phase))
        assert s["sampled"] == s["replies"] == s["ok"] == logged == 5  # fraction 0.5 of 10 nodes
    for e in rounds:
        if e["phase"] == "train":
            assert e["training_time"] > 0 and isinstance(e["converged"], bool)
            assert len(e["training_losses"]) == 5  # local-epochs

    accuracy = [e["accuracy"] for e in events if e["event"] == "global_evaluation"]
    assert len(accuracy) == ROUNDS + 1
    assert accuracy[-1] > 0.3  # well above chance: 0.1 for 10 classes
    assert (tmp_path / "final_model.pt").stat().st_size > 0
