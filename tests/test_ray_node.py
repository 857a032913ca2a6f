"""The pieces of the Ray cluster, without Docker: the Ray node entrypoint's checks and its
watch over `ray start` (docker/ray_node.py, with stand-ins for `ray start`), the hook that
ships a run's FAB to the workers (docker/fab_runtime_env.py, with a real local Ray), and
the Ray node certificate (certs/make_certs.py `ray`)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import ROOT, json_lines


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ray_node = load("ray_node")
fab_runtime_env = load("fab_runtime_env")
ConfigError = ray_node.ConfigError


def make_certs(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "certs/make_certs.py"), *args, "--out", str(out),
                           "--owner", f"{os.getuid()}:{os.getgid()}"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LOG_FORMAT": "console"})


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    assert make_certs(out, "init", "--nodes", "0").returncode == 0
    made = make_certs(out, "ray", "--subnet", "10.213.47.0/29", "--san", "IP:192.0.2.7")
    assert made.returncode == 0, made.stderr
    return out


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("RAY_")]:
        monkeypatch.delenv(name)


# --- the Ray node certificate ----------------------------------------------------------------

def test_a_ray_certificate_names_every_address_of_the_subnet_and_is_for_both_ends(certs):
    cert = x509.load_pem_x509_certificate((certs / "ray/ray.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        *(f"10.213.47.{i}" for i in range(1, 7)), "192.0.2.7", "127.0.0.1"}
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ca = x509.load_pem_x509_certificate((certs / "ca/ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (certs / "ray/ca.crt").read_bytes() == (certs / "ca/ca.crt").read_bytes()
    assert oct((certs / "ray/ray.key").stat().st_mode & 0o777) == "0o600"
    assert oct((certs / "ray/ray.token").stat().st_mode & 0o777) == "0o600"


def test_every_ray_node_folder_gets_the_one_cluster_token(certs):
    assert make_certs(certs, "ray", "host-2", "--san", "IP:192.0.2.8").returncode == 0
    token = (certs / "ray/ray.token").read_text()
    assert len(token) == 64 and (certs / "host-2/ray.token").read_text() == token == (certs / "ca/ray.token").read_text()


@pytest.mark.parametrize(("args", "error"), [
    ((), "needs the addresses its nodes are dialled at"),
    (("--san", "DNS:ray-head"), "needs the addresses"),  # Ray dials IPs: a name alone never matches
    (("--subnet", "10.0.0.0/16"), "has 65536 addresses: at most 256"),
    (("--subnet", "10.213.47.3/26"), "host bits set"),
    (("--subnet", "ray"), "bad --subnet 'ray'"),
    (("server", "--san", "IP:10.0.0.1"), "bad Ray node name 'server'"),
])
def test_a_ray_certificate_that_cannot_work_is_refused(tmp_path, args, error):
    assert make_certs(tmp_path, "init", "--nodes", "0").returncode == 0
    result = make_certs(tmp_path, "ray", *args)
    assert result.returncode == 2 and error in result.stderr
    assert not (tmp_path / "ray").exists()


def test_a_ray_certificate_is_not_replaced_without_force(certs):
    before = (certs / "ray/ray.crt").read_bytes()
    result = make_certs(certs, "ray", "--subnet", "10.213.47.0/29")
    assert result.returncode == 2 and "--force" in result.stderr
    assert (certs / "ray/ray.crt").read_bytes() == before


# --- the entrypoint's checks -------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "error"), [
    ([], "one of head, worker, driver, got none"),
    (["ray"], "one of head, worker, driver, got ['ray']"),
    (["head", "--num-cpus", "4"], "head takes a program to run after `--` or nothing, got --num-cpus 4"),
    (["head", "--"], "head takes a program"),
    (["worker", "--", "flower-superlink"], "worker takes no more arguments"),
    (["driver"], "driver needs the program to run after `--`"),
    (["driver", "flower-superlink"], "after `--`"),
    (["driver", "--"], "after `--`"),
])
def test_bad_arguments_are_refused(argv, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        ray_node.parse_args(argv)


def test_the_driver_takes_its_program_after_two_dashes():
    assert ray_node.parse_args(["driver", "--", "flower-superlink", "--simulation"]) == (
        "driver", ["flower-superlink", "--simulation"])
    assert ray_node.parse_args(["worker"]) == ("worker", [])
    assert ray_node.parse_args(["head"]) == ("head", [])
    assert ray_node.parse_args(["head", "--", "flower-superlink"]) == ("head", ["flower-superlink"])


@pytest.mark.parametrize(("address", "error"), [
    ("", "RAY_HEAD_ADDRESS='' is not host:port"),
    ("ray-head", "is not host:port"),
    ("ray-head:gcs", "is not host:port"),
    ("ray-head:70000", "is not host:port"),
    ("no-such-host.invalid:6379", "no-such-host.invalid does not resolve"),
])
def test_a_bad_head_address_is_refused(monkeypatch, address, error):
    monkeypatch.setenv("RAY_HEAD_ADDRESS", address)
    with pytest.raises(ConfigError, match=error):
        ray_node.head_address()


def test_the_head_address_is_resolved_to_an_ip_the_certificate_can_name(monkeypatch):
    monkeypatch.setenv("RAY_HEAD_ADDRESS", "localhost:6379")
    assert ray_node.head_address() in (("127.0.0.1", 6379), ("::1", 6379))


def test_the_node_ip_is_the_one_given_or_the_route_to_the_head(monkeypatch):
    monkeypatch.setenv("RAY_NODE_IP", "not-an-ip")
    with pytest.raises(ConfigError, match="RAY_NODE_IP='not-an-ip' is not an IP address"):
        ray_node.node_ip("worker", ("192.0.2.1", 6379))
    monkeypatch.setenv("RAY_NODE_IP", "192.0.2.50")
    assert ray_node.node_ip("worker", ("192.0.2.1", 6379)) == "192.0.2.50"
    monkeypatch.delenv("RAY_NODE_IP")
    with pytest.raises(ConfigError, match=r"\(loopback\), which no other node can reach: set RAY_NODE_IP"):
        ray_node.node_ip("worker", ("127.0.0.1", 6379))


def tls_env(monkeypatch, folder: Path, cert: str = "ray/ray.crt", key: str = "ray/ray.key") -> None:
    monkeypatch.setenv("RAY_USE_TLS", "1")
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", str(folder / cert))
    monkeypatch.setenv("RAY_TLS_SERVER_KEY", str(folder / key))
    monkeypatch.setenv("RAY_TLS_CA_CERT", str(folder / "ray/ca.crt"))


def test_tls_is_checked_before_ray_starts(monkeypatch, certs):
    assert ray_node.check_tls("10.213.47.2") is False  # RAY_USE_TLS unset: off (the caller warns)
    tls_env(monkeypatch, certs)
    assert ray_node.check_tls("10.213.47.2") is True
    with pytest.raises(ConfigError, match=r"does not name this node's address 10\.213\.47\.9 .* --san IP:10\.213\.47\.9"):
        ray_node.check_tls("10.213.47.9")
    # The SuperLink's certificate, from the same CA, is for servers only.
    tls_env(monkeypatch, certs, cert="server/superlink.crt", key="server/superlink.key")
    with pytest.raises(ConfigError, match="does not name this node's address"):
        ray_node.check_tls("10.213.47.2")
    with pytest.raises(ConfigError, match="serverAuth and clientAuth"):
        ray_node.check_tls("127.0.0.1")
    tls_env(monkeypatch, certs, cert="ray/missing.crt")
    with pytest.raises(ConfigError, match=r"cannot read RAY_TLS_SERVER_CERT='.*missing\.crt'.*RAY_CERTS_DIR"):
        ray_node.check_tls("10.213.47.2")
    tls_env(monkeypatch, certs, cert="ray/ray.token")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        ray_node.check_tls("10.213.47.2")


def test_token_authentication_needs_its_token(monkeypatch, certs, tmp_path):
    assert ray_node.check_token() is False
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN_PATH='' is not a readable, non-empty file"):
        ray_node.check_token()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="non-empty"):
        ray_node.check_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(certs / "ray/ray.token"))
    assert ray_node.check_token() is True


def test_each_role_starts_the_ray_node_it_is(monkeypatch):
    head = ray_node.ray_command("head", "10.213.47.2", None)
    assert head[:3] == ["ray", "start", "--block"] and "--head" in head
    assert head[head.index("--num-cpus") + 1] == "0"  # no ClientApp next to the GCS
    driver = ray_node.ray_command("driver", "10.213.47.3", ("10.213.47.2", 6379))
    assert driver[driver.index("--address") + 1] == "10.213.47.2:6379" and driver[driver.index("--num-cpus") + 1] == "0"
    worker = ray_node.ray_command("worker", "10.213.47.4", ("10.213.47.2", 6379))
    assert "--num-cpus" not in worker and "--head" not in worker  # Ray counts the container's CPUs
    monkeypatch.setenv("RAY_NUM_CPUS", "3")
    monkeypatch.setenv("RAY_NUM_GPUS", "0.5")
    monkeypatch.setenv("RAY_OBJECT_STORE_MB", "100")
    worker = ray_node.ray_command("worker", "10.213.47.4", ("10.213.47.2", 6379))
    assert worker[worker.index("--num-cpus") + 1] == "3" and worker[worker.index("--num-gpus") + 1] == "0.5"
    assert worker[worker.index("--object-store-memory") + 1] == str(100 * 1024 * 1024)
    assert worker[worker.index("--node-ip-address") + 1] == "10.213.47.4"
    ipv6 = ray_node.ray_command("worker", "2001:db8::4", ("2001:db8::2", 6379))
    assert ipv6[ipv6.index("--address") + 1] == "[2001:db8::2]:6379"


@pytest.mark.parametrize(("name", "value"), [("RAY_NUM_CPUS", "two"), ("RAY_NUM_CPUS", "-1"),
                                             ("RAY_NUM_GPUS", "half"), ("RAY_OBJECT_STORE_MB", "1.5")])
def test_bad_numbers_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}='{value}' is not a number"):
        ray_node.ray_command("worker", "10.213.47.4", ("10.213.47.2", 6379))


def test_a_bad_setting_stops_the_container_with_one_json_line(certs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_HEAD_ADDRESS": "ray-head.invalid:6379", "LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, str(ROOT / "docker/ray_node.py"), "worker"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2 and result.stderr == ""
    [event] = json_lines(result.stdout)
    assert event["event"] == "ray_node_config_invalid" and "ray-head.invalid does not resolve" in event["error"]
    env |= {"RAY_HEAD_ADDRESS": "127.0.0.1:6379", "RAY_NODE_IP": "10.213.47.2", "RAY_USE_TLS": "1",
            "RAY_TLS_SERVER_CERT": str(certs / "ray/ray.crt"), "RAY_TLS_SERVER_KEY": str(certs / "ray/ray.key"),
            "RAY_TLS_CA_CERT": str(certs / "nowhere/ca.crt")}
    result = subprocess.run([sys.executable, str(ROOT / "docker/ray_node.py"), "worker"], capture_output=True,
                            text=True, timeout=60, env=env)
    [event] = json_lines(result.stdout)
    assert result.returncode == 2 and "RAY_TLS_CA_CERT=" in event["error"]


# --- the watch over `ray start` -----------------------------------------------------------------

def stand_in(body: str) -> list[str]:
    """A stand-in for `ray start --block`: prints as Ray's CLI does, then `body`."""
    return [sys.executable, "-c", f"""
import sys, time
print("2026-12-01 21:14:18,585\\tINFO scripts.py:940 -- Local node IP: 10.213.47.3", flush=True)
{body}
"""]


STARTED = 'print("2026-12-01 21:14:29,008\\tSUCC scripts.py:980 -- Ray runtime started.", flush=True)'
FIELDS = {"role": "driver", "node_ip": "10.213.47.3", "tls": True, "token_auth": True, "head": "10.213.47.2:6379"}


def test_ray_start_text_becomes_json_lines(capfd):
    code = ray_node.supervise("head", stand_in(STARTED + """
print("2026-12-01 21:14:29,010\\tINFO scripts.py:1349 -- 1/1 stopped.2026-12-01 21:14:29,011\\tWARNING x.py:1 -- two in one")
print("a line of no format", file=sys.stderr)
print('{"timestamp": "2026-12-01T21:14:30Z", "level": "warning", "event": "a warning", "logger": "py.warnings"}')
"""), [], FIELDS | {"role": "head"})
    assert code == 0
    events = json_lines(capfd.readouterr().out)
    logs = [(e["level"], e["message"]) for e in events if e["event"] == "ray_log"]
    # What the supervisor promises: every line converted, each stream's lines in their order.
    # Between the child's stdout and stderr there is no order: stdout to a pipe is
    # block-buffered (unless PYTHONUNBUFFERED is set), stderr is not.
    from_stderr = ("info", "a line of no format")
    assert logs.count(from_stderr) == 1
    assert [line for line in logs if line != from_stderr] == [
        ("info", "Local node IP: 10.213.47.3"), ("info", "Ray runtime started."),
        ("info", "1/1 stopped."), ("warning", "two in one")]
    assert [e["event"] for e in events if e["event"].startswith("ray_node")] == ["ray_node_started", "ray_node_stopped"]
    # A JSON line passes as it came.
    [warning] = [e for e in events if e["event"] == "a warning"]
    assert warning["logger"] == "py.warnings" and warning["level"] == "warning"


def test_the_program_starts_once_the_node_has_joined_and_its_end_stops_ray(tmp_path, capfd):
    marker = tmp_path / "ray-still-running"
    code = ray_node.supervise("driver", stand_in(STARTED + f"""
open({str(marker)!r}, "w").close()
time.sleep(300)
"""), [sys.executable, "-c", "import os, sys; print(os.environ['RAY_ADDRESS'], flush=True); sys.exit(3)"], FIELDS)
    assert code == 3
    out = capfd.readouterr().out
    assert "10.213.47.2:6379\n" in out  # Flower's ray.init() joins the cluster this node joined
    [stopped] = [e for e in json_lines(out.replace("10.213.47.2:6379\n", "")) if e["event"] == "ray_node_stopped"]
    assert stopped["exit_code"] == 3 and stopped["stopped_first"] == "program" and stopped["level"] == "error"


def test_a_ray_that_dies_takes_the_program_with_it(capfd):
    started = time.monotonic()
    code = ray_node.supervise("driver", stand_in(STARTED + """
time.sleep(1)
print("2026-12-01 21:20:00,000\\tERROR scripts.py:1200 -- Some Ray subprocesses exited unexpectedly: raylet", flush=True)
sys.exit(1)
"""), [sys.executable, "-c", "import time; time.sleep(300)"], FIELDS)
    assert code == 1 and time.monotonic() - started < 20
    events = json_lines(capfd.readouterr().out)
    assert any(e["event"] == "ray_log" and e["level"] == "error" and "raylet" in e["message"] for e in events)
    [stopped] = [e for e in events if e["event"] == "ray_node_stopped"]
    assert stopped["stopped_first"] == "ray"


def test_a_node_that_never_joins_says_so_and_starts_no_program(tmp_path, capfd):
    never = tmp_path / "never"
    code = ray_node.supervise("worker", stand_in("""
print("2026-12-01 21:14:20,000\\tERROR services.py:500 -- Failed to connect to GCS at 10.213.47.2:6379", flush=True)
sys.exit(1)
"""), [sys.executable, "-c", f"open({str(never)!r}, 'w')"], FIELDS | {"role": "worker"})
    assert code == 1 and not never.exists()
    [failed] = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "ray_node_failed"]
    assert failed["exit_code"] == 1 and "ended before the node joined" in failed["error"]


# --- the hook that ships the FAB ----------------------------------------------------------------

def fab(home: Path, name: str = "flowerdock.flowerdock.1.0.0.b7836d8b") -> Path:
    folder = home / "apps" / name
    (folder / "marked_app").mkdir(parents=True)
    (folder / "marked_app/__init__.py").write_text("WHERE = 'the FAB'\n")
    return folder


def test_the_hook_adds_the_one_fab_folder_as_working_dir(tmp_path, monkeypatch):
    folder = fab(tmp_path)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    flower_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}
    env = fab_runtime_env.ship_fab(flower_env)
    assert env == {**flower_env, "working_dir": str(folder.resolve())}
    assert "working_dir" not in flower_env  # Flower's dict is left as it was


def test_the_hook_refuses_where_no_single_fab_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    with pytest.raises(fab_runtime_env.NoFabFolder, match="found 0"):
        fab_runtime_env.ship_fab({})
    monkeypatch.setattr(sys, "path", [str(fab(tmp_path, "a.b.1.0.0.aaaa")), str(fab(tmp_path, "a.c.1.0.0.bbbb")),
                                      *sys.path])
    with pytest.raises(fab_runtime_env.NoFabFolder, match="found 2"):
        fab_runtime_env.ship_fab({})
    monkeypatch.setattr(sys, "path", sys.path[1:])
    with pytest.raises(fab_runtime_env.NoFabFolder, match="already has a working_dir"):
        fab_runtime_env.ship_fab({"working_dir": "/elsewhere"})


@pytest.mark.simulation
def test_through_the_hook_a_ray_worker_imports_the_fab_code_and_not_another_copy(tmp_path):
    # A real Ray, started as Flower's backend starts it (a runtime_env of PYTHONPATH alone).
    # The worker is another interpreter; in a container of its own it would not find the
    # driver's FAB folder on that path, and would import the image's copy of `app` from
    # site-packages instead. Here another `marked_app` first on its path plays that copy.
    folder = fab(tmp_path)
    other = tmp_path / "image-copy" / "marked_app"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHERE = 'the image copy'\n")
    code = f"""
import json, os, sys
sys.path.insert(0, {str(folder)!r})
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": os.pathsep.join([{str(other.parent)!r}, *sys.path])}}}})

@ray.remote
def where():
    import marked_app
    return marked_app.WHERE, marked_app.__file__

print(json.dumps(ray.get(where.remote())))
"""
    env = {**os.environ, "FLWR_HOME": str(tmp_path), "RAY_ADDRESS": "local", "LOG_FORMAT": "console",
           "RAY_RUNTIME_ENV_HOOK": "fab_runtime_env.ship_fab", "PYTHONPATH": str(ROOT / "docker")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    where, path = json.loads(result.stdout.strip().splitlines()[-1])
    assert where == "the FAB" and "working_dir_files" in path  # Ray's copy of the uploaded folder
    # Without the hook the same worker imports the other copy: the hook is what makes the difference.
    env.pop("RAY_RUNTIME_ENV_HOOK")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])[0] == "the image copy"


def test_a_head_that_runs_the_superlink_gives_it_its_own_address(capfd):
    code = ray_node.supervise("head", stand_in(STARTED + "\ntime.sleep(300)"),
                              [sys.executable, "-c", "import os; print(os.environ['RAY_ADDRESS'], flush=True)"],
                              {"role": "head", "node_ip": "203.0.113.10", "tls": True, "token_auth": True})
    assert code == 0 and "203.0.113.10:6379\n" in capfd.readouterr().out
