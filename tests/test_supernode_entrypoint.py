"""The SuperNode entrypoint's watch over Flower (docker/supernode_entrypoint.py), with stand-ins
for flower-supernode: it must end a Flower that gave up, and never wait on Flower's orphans."""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from tests.conftest import ROOT, json_lines

spec = importlib.util.spec_from_file_location("supernode_entrypoint", ROOT / "docker/supernode_entrypoint.py")
entrypoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entrypoint)


def flower(tmp_path, body: str) -> list[str]:
    """A stand-in for flower-supernode that first starts a child that outlives it (as its
    SuperExec and a ClientApp would), writing the child's PID to a file."""
    code = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open({str(tmp_path / 'child.pid')!r}, "w").write(str(child.pid))
{body}
"""
    return [sys.executable, "-c", code]


def gone(pid: int, within: float = 5.0) -> bool:
    """The process ended (a zombie waiting for its reaper counts as ended) within `within` s:
    SIGKILL is delivered asynchronously."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def superlink(monkeypatch):
    monkeypatch.setenv("SUPERLINK", "superlink.example.org:9092")


def test_a_flower_that_gave_up_on_the_superlink_is_ended(tmp_path, capfd):
    started = time.monotonic()
    code = entrypoint.supervise(flower(tmp_path, """
print('{"event": "SSL/TLS handshake error detected.", "logger": "flwr"}', flush=True)
time.sleep(300)  # the process lives on, silent: what Flower 1.42 does
"""))
    assert code == 1 and time.monotonic() - started < 15
    events = json_lines(capfd.readouterr().out)
    assert events[0]["event"] == "SSL/TLS handshake error detected."  # passed through as it came
    [lost] = [e for e in events if e["event"] == "supernode_lost_superlink"]
    assert lost["superlink"] == "superlink.example.org:9092" and "SSL/TLS" in lost["reason"]
    assert gone(int((tmp_path / "child.pid").read_text()))


def test_retries_that_ran_out_are_a_give_up_too(tmp_path, capfd):
    code = entrypoint.supervise(flower(tmp_path, """
print('{"event": "Giving up reconnection after 120.00 seconds and 30 tries.", "logger": "flwr"}', flush=True)
time.sleep(300)
"""))
    assert code == 1
    assert any(e["event"] == "supernode_lost_superlink" for e in json_lines(capfd.readouterr().out))


def test_a_crashed_flower_ends_the_container_without_waiting_for_its_children(tmp_path, capfd):
    started = time.monotonic()
    code = entrypoint.supervise(flower(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert code == 128 + 9 and time.monotonic() - started < 15  # its child still held the pipe
    assert gone(int((tmp_path / "child.pid").read_text()))
    [exited] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "supernode_exited"]
    assert exited["exit_code"] == 137


def test_a_refused_key_says_what_may_be_wrong(tmp_path, capfd):
    code = entrypoint.supervise(flower(tmp_path, """
print('{"event": "Exit Code: 305 Failed to activate SuperNode.", "logger": "flwr"}', flush=True)
sys.exit(1)
"""))
    assert code == 1
    [line] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "supernode_not_activated"]
    assert "previous session" in line["hint"] and "not registered" in line["hint"]


def test_a_clean_exit_is_passed_on(tmp_path, capfd):
    assert entrypoint.supervise(flower(tmp_path, "print('{\"event\": \"bye\"}')")) == 0
    assert [e["event"] for e in json_lines(capfd.readouterr().out)] == ["bye"]
