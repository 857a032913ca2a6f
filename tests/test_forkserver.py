"""The warm ClientApp launcher (docker/flwr-clientapp) and its fork server
(docker/clientapp_forkserver.py), with a stand-in ClientApp (tests/forkserver/child.py).
Real processes, a real Unix socket; no Docker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAUNCHER = ROOT / "docker" / "flwr-clientapp"


@pytest.fixture
def socket_path(tmp_path):
    return str(tmp_path / "forkserver.sock")


@pytest.fixture
def server(socket_path):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "clientapp_forkserver.py"), "--socket", socket_path,
         "--target", "tests.forkserver.child:main", "--preload", "json numpy no_such_module"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(socket_path):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the fork server did not come up"
        time.sleep(0.05)
    yield process
    process.terminate()
    process.wait(timeout=10)


def launch(socket_path: str, *args: str, stdin: str = "", env: dict | None = None, **kwargs):
    return subprocess.run([sys.executable, "-IS", str(LAUNCHER), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=kwargs.get("cwd", ROOT),
                          env={**os.environ, "CLIENTAPP_FORKSERVER_SOCKET": socket_path, **(env or {})})


def test_each_message_runs_in_a_fresh_process_of_its_own(server, socket_path, tmp_path):
    seen = []
    for number in range(3):
        result = launch(socket_path, "describe", str(number), stdin="hello\n", env={"MARKER": f"m{number}"},
                        cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        child = json.loads(result.stdout)
        assert child["argv"][1:] == ["describe", str(number)]
        assert child["marker"] == f"m{number}" and child["cwd"] == str(tmp_path)
        assert child["input"] == "hello"  # the launcher's stdin, stdout: the child's
        assert child["comm"] == "flwr-clientapp"  # ps/pkill see a ClientApp
        assert child["ppid"] == server.pid and child["threads"] == 1
        assert not child["app_imported"]  # the submitted FAB's `app` is what a child imports
        seen.append(child["pid"])
    assert len(set(seen)) == 3 and server.pid not in seen


@pytest.mark.parametrize("args, code", [(("exit", "3"), 3), (("raise",), 1), (("segfault",), 128 + 9)])
def test_a_failing_child_reports_its_status_and_the_server_serves_on(server, socket_path, args, code):
    result = launch(socket_path, *args)
    assert result.returncode == code
    if args == ("raise",):
        assert "the ClientApp failed" in result.stdout + result.stderr
    assert server.poll() is None
    assert launch(socket_path, "describe", stdin="x\n").returncode == 0


def test_signals_to_the_launcher_reach_the_clientapp(server, socket_path):
    launcher = subprocess.Popen([sys.executable, "-IS", str(LAUNCHER), "sleep"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "CLIENTAPP_FORKSERVER_SOCKET": socket_path})
    child = json.loads(launcher.stdout.readline())["sleeping"]
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=10) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(child, 0)
            time.sleep(0.1)


def test_without_a_server_the_launcher_starts_flowers_own(socket_path, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    own = bin_dir / "flwr-clientapp"
    own.write_text("#!/bin/sh\necho \"cold $*\"\n")
    own.chmod(0o755)
    result = launch(socket_path, "--token", "t", env={"PATH": f"{LAUNCHER.parent}:{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout == "cold --token t\n"
    [warning] = [json.loads(line) for line in result.stderr.splitlines()]
    assert warning["event"] == "clientapp_cold_start" and warning["level"] == "warning"


def test_the_server_outlives_a_garbage_request(server, socket_path):
    import socket as sockets

    with sockets.socket(sockets.AF_UNIX) as raw:
        raw.connect(socket_path)
        raw.sendall(b"not a request")
        assert raw.recv(10) == b""  # hung up on
    assert launch(socket_path, "describe", stdin="x\n").returncode == 0


def test_the_server_logs_json_and_reports_a_missing_preload(server, socket_path):
    launch(socket_path, "exit", "0")
    server.terminate()
    server.wait(timeout=10)
    lines = [json.loads(line) for line in server.stdout.read().splitlines() if line.strip()]
    events = {line["event"]: line for line in lines}
    assert events["forkserver_preload_failed"]["module"] == "no_such_module"
    assert events["forkserver_ready"]["preloaded"] == ["json", "numpy"]
    assert not Path(socket_path).exists()


def test_a_launcher_waits_for_a_server_that_is_starting(socket_path):
    Path(socket_path + ".starting").touch()  # what the SuperNode entrypoint does before starting it
    launcher = subprocess.Popen([sys.executable, "-IS", str(LAUNCHER), "describe"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "CLIENTAPP_FORKSERVER_SOCKET": socket_path})
    time.sleep(1)
    assert launcher.poll() is None  # waiting, not cold-starting
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "clientapp_forkserver.py"), "--socket", socket_path,
         "--target", "tests.forkserver.child:main", "--preload", "json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    try:
        out, err = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, err
        assert json.loads(out)["ppid"] == server.pid and "cold_start" not in err
        assert not Path(socket_path + ".starting").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)
