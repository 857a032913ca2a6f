"""The SuperNode entrypoint's watch over Flower (docker/supernode_entrypoint.py), with stand-ins
for flower-supernode: it must end a Flower that gave up, and never wait on Flower's orphans."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, VERSION, json_lines

sys.path.insert(0, str(ROOT / "docker"))  # the entrypoint's modules lie beside it in the image
spec = importlib.util.spec_from_file_location("supernode_entrypoint", ROOT / "docker/supernode_entrypoint.py")
entrypoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entrypoint)
import supernode_processes as processes  # noqa: E402


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
    code = processes.supervise(flower(tmp_path, """
print('{"event": "SSL/TLS handshake error detected.", "logger": "flwr"}', flush=True)
time.sleep(300)  # the process lives on, silent: what Flower 1.42 does
"""))
    assert code == 1 and time.monotonic() - started < 15
    events = json_lines(capfd.readouterr().out)
    # Passed through as it came (picked by content: the stand-in and its child share the pipe).
    [passed] = [e for e in events if e.get("logger") == "flwr"]
    assert passed == {"event": "SSL/TLS handshake error detected.", "logger": "flwr"}
    [lost] = [e for e in events if e["event"] == "supernode_lost_superlink"]
    assert lost["superlink"] == "superlink.example.org:9092" and "SSL/TLS" in lost["reason"]
    assert gone(int((tmp_path / "child.pid").read_text()))


def test_retries_that_ran_out_are_a_give_up_too(tmp_path, capfd):
    code = processes.supervise(flower(tmp_path, """
print('{"event": "Giving up reconnection after 120.00 seconds and 30 tries.", "logger": "flwr"}', flush=True)
time.sleep(300)
"""))
    assert code == 1
    assert any(e["event"] == "supernode_lost_superlink" for e in json_lines(capfd.readouterr().out))


def test_a_crashed_flower_ends_the_container_without_waiting_for_its_children(tmp_path, capfd):
    started = time.monotonic()
    code = processes.supervise(flower(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert code == 128 + 9 and time.monotonic() - started < 15  # its child still held the pipe
    assert gone(int((tmp_path / "child.pid").read_text()))
    [exited] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "supernode_exited"]
    assert exited["exit_code"] == 137


def test_a_refused_key_says_what_may_be_wrong(tmp_path, capfd):
    code = processes.supervise(flower(tmp_path, """
print('{"event": "Exit Code: 305 Failed to activate SuperNode.", "logger": "flwr"}', flush=True)
sys.exit(1)
"""))
    assert code == 1
    [line] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "supernode_not_activated"]
    assert "previous session" in line["hint"] and "not registered" in line["hint"]


def test_a_clean_exit_is_passed_on(tmp_path, capfd):
    assert processes.supervise(flower(tmp_path, "print('{\"event\": \"bye\"}')")) == 0
    assert [e["event"] for e in json_lines(capfd.readouterr().out)] == ["bye"]


# --- Which node this is: replica -> partition -> key, or its own data folder ----------

@pytest.fixture
def compose_dns(monkeypatch):
    """This container is replica 2 of three, as Compose's DNS tells it."""
    import socket

    addresses = {"me": "10.0.0.12", "fd-supernode-1": "10.0.0.11", "fd-supernode-2": "10.0.0.12",
                 "fd-supernode-3": "10.0.0.13"}
    monkeypatch.setattr(socket, "gethostname", lambda: "me")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: addresses[name])
    monkeypatch.setattr(socket, "gethostbyname_ex", lambda name: (name, [], [addresses[name]]))
    monkeypatch.setenv("REPLICA_NAME_PREFIX", "fd-supernode")
    monkeypatch.setenv("NUM_PARTITIONS", "3")
    monkeypatch.delenv("PARTITION_ID", raising=False)


def test_replica_n_takes_partition_n_minus_1_and_key_n(compose_dns):
    assert entrypoint.partition_node_config() == ({"partition-id": 1, "num-partitions": 3}, 2)
    with pytest.raises(entrypoint.ConfigError, match="/certs/supernode-2/ca.crt"):
        entrypoint.node_files(2)


def test_a_given_partition_wins_and_must_fit(compose_dns, monkeypatch):
    monkeypatch.setenv("PARTITION_ID", "0")
    assert entrypoint.partition_node_config() == ({"partition-id": 0, "num-partitions": 3}, None)
    monkeypatch.setenv("PARTITION_ID", "3")
    with pytest.raises(entrypoint.ConfigError, match="PARTITION_ID=3 is outside 0..2"):
        entrypoint.partition_node_config()


def test_a_replica_on_its_own_folder_finds_it_by_number(compose_dns, monkeypatch):
    monkeypatch.setenv("DATA_PATH", "/sites/site-{replica}")
    assert entrypoint.data_node_config() == ({"data-path": "/sites/site-2", "label-column": "label"}, 2)


def test_a_site_folder_reaches_flower_as_node_config_it_parses(monkeypatch):
    from flwr.common.config import parse_config_args

    monkeypatch.delenv("REPLICA_NAME_PREFIX", raising=False)
    monkeypatch.setenv("DATA_PATH", "/data")
    monkeypatch.setenv("LABEL_COLUMN", "diagnosis code")
    config, replica = entrypoint.data_node_config()
    assert replica is None
    text = entrypoint.as_flower_node_config(config)
    assert parse_config_args([text]) == {"data-path": "/data", "label-column": "diagnosis code"}
    assert parse_config_args([entrypoint.as_flower_node_config({"partition-id": 1, "num-partitions": 3})]) == {
        "partition-id": 1, "num-partitions": 3}
    monkeypatch.setenv("SHARE_LABEL_COUNTS", "1")  # an opt-in, off unless set
    config, _ = entrypoint.data_node_config()
    assert parse_config_args([entrypoint.as_flower_node_config(config)])["share-label-counts"] is True


# --- A site folder that cannot be used: logged, unhealthy, and healthy again once fixed ---

import site_data_watch  # noqa: E402 - beside the entrypoint in the image

health_spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker/healthcheck.py")
healthcheck = importlib.util.module_from_spec(health_spec)
health_spec.loader.exec_module(healthcheck)


def test_a_broken_site_folder_is_unhealthy_until_fixed(tmp_path, monkeypatch, capfd):
    import numpy as np

    health_file, state_file = tmp_path / "health.json", tmp_path / "site-data.json"
    monkeypatch.setattr(entrypoint, "HEALTH_FILE", health_file)
    monkeypatch.setattr(processes, "SITE_DATA_STATE", state_file)
    monkeypatch.setattr(healthcheck, "SUPERNODE_TARGET", str(health_file))
    folder = tmp_path / "site"
    folder.mkdir()
    x, y = np.random.default_rng(0).random((30, 64)), np.arange(30) % 10
    np.savez(folder / "train.npz", x=x, y=np.where(np.arange(30) == 4, 12, y))  # a label out of range

    entrypoint.HealthTarget(["--root-certificates", "/certs/ca.crt"], site_data=True)
    watch = site_data_watch.SiteDataWatch(folder, "label", lambda p: site_data_watch.write_state(state_file, p))
    assert "sample 4 has 12" in watch.check()
    with pytest.raises(ValueError, match="this site's data cannot be used: .*train.npz: labels must be in 0..9"):
        healthcheck.main("supernode://127.0.0.1:9094/health")
    assert watch.check() is not None  # the same problem is not logged twice

    np.savez(folder / "train.npz", x=x, y=y)
    assert watch.check() is None
    assert json.loads(state_file.read_text())["problem"] is None
    events = [e for e in json_lines(capfd.readouterr().out) if e["event"].startswith("site_data")]
    assert [e["event"] for e in events] == ["site_data_invalid", "site_data_valid"]
    assert events[0]["path"] == str(folder / "train.npz") and "labels must be in 0..9" in events[0]["problem"]
    assert events[1]["train_examples"] == 24 and events[1]["validation_examples"] == 6
    # each says which app's code checked: the image's (here, this checkout's, installed)
    assert {e["checked_with_app"] for e in events} == {VERSION}


def test_start_up_expectations_can_be_left_to_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_FEATURES", "any")
    monkeypatch.setenv("NUM_CLASSES", "3")
    watch = site_data_watch.SiteDataWatch(tmp_path, "label", lambda problem: None)
    assert (watch.features, watch.num_classes) == (None, 3)
    monkeypatch.setenv("NUM_CLASSES", "ten")
    with pytest.raises(ValueError, match="NUM_CLASSES='ten' is not a whole number or 'any'"):
        site_data_watch.SiteDataWatch(tmp_path, "label", lambda problem: None)


# --- The health probe's plaintext fallback (any://) ------------------------------------

@pytest.mark.parametrize(("status", "healthy"), [(200, 0), (503, None)])
def test_the_probe_falls_back_to_plaintext_and_wants_200(status, healthy):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"any://127.0.0.1:{server.server_address[1]}/health"
        if healthy is None:  # urllib raises on an error status: the probe's caller says unhealthy
            with pytest.raises(Exception, match="503"):
                healthcheck.main(url)
        else:
            assert healthcheck.main(url) == healthy
    finally:
        server.shutdown()


# --- Who runs as whom: the key's owner for Flower, uid 49999 for ClientApps -----------

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="changing user needs root (CI runs as root)")
SYSTEM_PYTHON = "/usr/bin/python3"  # one every uid may run (this venv's may sit in root's home)


def key_file(tmp_path, uid: int, mode: int = 0o600):
    key = tmp_path / "supernode.key"
    key.write_text("a key")
    os.chown(key, uid, uid)
    key.chmod(mode)
    return key


@needs_root
@pytest.mark.parametrize(("uid", "mode", "error"), [
    (49999, 0o600, "belongs to uid 49999: the ClientApps run as uid 49999"),
    (0, 0o600, "belongs to uid 0"),
    (50002, 0o640, "readable by others .mode 640.: chmod 600"),
])
def test_a_key_the_clientapps_could_read_stops_the_node(tmp_path, uid, mode, error):
    with pytest.raises(entrypoint.ConfigError, match=error):
        processes.daemon_uid(key_file(tmp_path, uid, mode))


@needs_root
def test_flower_runs_as_the_keys_owner_and_the_clientapp_side_as_flwr(tmp_path, capfd):
    owner = processes.daemon_uid(key_file(tmp_path, 50002))
    assert owner == 50002
    probe = "import os, json; print(json.dumps({'event': 'who', 'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups()}))"
    assert processes.supervise([SYSTEM_PYTHON, "-c", probe], owner) == 0
    side = processes.Child("probe", [SYSTEM_PYTHON, "-c", probe])
    side._spawn()
    side.process.wait(timeout=30)
    who = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "who"]
    assert [(e["uid"], e["gid"], e["groups"]) for e in who] == [(50002, 50002, []), (49999, 49999, [])]


@needs_root
def test_the_clientapps_user_cannot_read_the_nodes_key(tmp_path):
    tmp_path.chmod(0o755)
    key = key_file(tmp_path, 50002)
    result = subprocess.run([SYSTEM_PYTHON, "-c", f"open({str(key)!r}).read()"], capture_output=True, text=True,
                            **processes.as_user(processes.CLIENTAPP_UID))
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_a_site_data_check_that_cannot_start_stops_the_node(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(processes, "SITE_DATA_STATE", tmp_path / "state.json")
    monkeypatch.setattr(processes, "as_user", lambda uid: {})  # as this user: the point is the exit
    monkeypatch.setenv("NUM_CLASSES", "ten")
    with pytest.raises(entrypoint.ConfigError, match="the site-data check stopped .exit 2."):
        processes.site_data_watch(str(tmp_path), "label")
    [line] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "supernode_config_invalid"]
    assert "NUM_CLASSES='ten'" in line["error"]
