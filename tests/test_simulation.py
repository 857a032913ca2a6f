"""`make simulation` as a newcomer types it: Flower's simulation runtime, 10 virtual SuperNodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections import Counter

import pytest

from tests.conftest import ROOT, exchanges, fresh_shell_env, json_lines

LOCAL_SUPERLINK_PORT = 39091  # fixed by Flower for its managed local SuperLink
ROUNDS = 2


@pytest.fixture
def flwr_home(tmp_path):
    if socket.socket().connect_ex(("127.0.0.1", LOCAL_SUPERLINK_PORT)) == 0:
        pytest.fail(f"a local SuperLink already listens on {LOCAL_SUPERLINK_PORT} (left by an earlier `flwr run`); "
                    "stop it with: make simulation-stop (in the checkout that started it)")
    home = tmp_path / "flwr-home"
    home.mkdir()
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    yield home
    subprocess.run(["make", "simulation-stop"], cwd=ROOT, env=fresh_shell_env(FLWR_HOME=str(home)), check=False)


@pytest.mark.simulation
def test_make_simulation_from_a_fresh_shell_logs_one_line_per_client_per_round(flwr_home, tmp_path):
    # As a user types it: `make simulation`, from a shell without the venv on PATH. Only
    # FLWR_HOME and the output folder point elsewhere, so that this test's SuperLink is its own.
    outputs = tmp_path / "outputs"
    env = fresh_shell_env(FLWR_HOME=str(flwr_home), APP_OUTPUT_DIR=str(outputs),
                          RUN_CONFIG=f"num-server-rounds={ROUNDS}")
    result = subprocess.run(["make", "--no-print-directory", "simulation"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The ServerApp's lines, streamed: JSON. Around them: make's echo of its commands and
    # the flwr CLI's own words, which are the user's terminal, not ours to change.
    ours = [line for line in result.stdout.splitlines() if line.startswith("{")]
    events = json_lines("\n".join(ours))
    assert "deprecated" not in result.stdout + result.stderr  # the current form of the config

    rounds = [e for e in events if e["event"] == "client_round"]
    assert rounds and all(e["status"] == "ok" for e in rounds)
    per_client = Counter((e["server_round"], e["phase"], e["node_id"]) for e in rounds)
    assert set(per_client.values()) == {1}, "a client was logged twice in one round and phase"
    summaries = {(e["server_round"], e["phase"]): e for e in events if e["event"] == "round_summary"}
    assert set(summaries) == exchanges(ROUNDS)
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
    [run_id] = {e["run_id"] for e in events if e["event"] == "run_finished"}
    assert (outputs / f"run-{run_id}" / "final_model.pt").stat().st_size > 0  # a folder per run


def test_a_local_superlink_that_is_not_ours_is_refused(tmp_path):
    import http.server
    import threading

    try:  # a stranger on Flower's local SuperLink port
        server = http.server.HTTPServer(("127.0.0.1", LOCAL_SUPERLINK_PORT), http.server.BaseHTTPRequestHandler)
    except OSError:
        pytest.fail(f"port {LOCAL_SUPERLINK_PORT} is taken: stop the local SuperLink (make simulation-stop)")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(["make", "--no-print-directory", "simulation"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env=fresh_shell_env(FLWR_HOME=str(tmp_path)))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0
    assert f"127.0.0.1:{LOCAL_SUPERLINK_PORT} is taken by a SuperLink that is not this checkout's" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr  # who holds it

