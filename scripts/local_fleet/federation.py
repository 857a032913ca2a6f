"""A federation as plain processes, no Docker, set up as the Docker deployment is: certificates
from certs/make_certs.py, a SuperLink with TLS, SuperNode authentication and an SQLite database,
in process isolation with its own SuperExec (flower-superexec) running the ServerApp; nodes'
public keys registered through the Control API by docker/register_supernodes.py; a run submitted
by docker/submit.py (`flwr run`). And the /proc readings the measurements take of its processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.proto.control_pb2 import ListNodesRequest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def json_objects(text: str) -> list[dict]:
    """The JSON-object lines of a text."""
    return [event for event in map(_json, text.splitlines()) if isinstance(event, dict)]


def _json(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Federation:
    """A SuperLink and its SuperExec in a temporary folder; `with` ends both and removes the folder."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="fake-fleet-"))
        self.port, self.procs = free_port(), []
        certs = self.home / "certs"
        subprocess.run([sys.executable, str(ROOT / "certs/make_certs.py"), "init", "--out", str(certs), "--nodes", "0",
                        "--owner", f"{os.getuid()}:{os.getgid()}", "--node-owner", f"{os.getuid()}:{os.getgid()}"],
                       check=True, capture_output=True)
        self.ca = str(certs / "server/ca.crt")
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n[superlink.local]\n'
                                               f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.ca}"\n')
        # The daemons start flwr-serverapp by name (this venv's first); no phoning home; JSON logs.
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(self.home),
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "APP_OUTPUT_DIR": str(self.home / "outputs"),
                    "OMP_NUM_THREADS": "1"}
        os.environ["FLWR_HOME"] = str(self.home)  # this process's Control API client reads it too

    def __enter__(self) -> Federation:
        server, secret = self.home / "certs/server", self.home / "certs/server/superexec.secret"
        self.superlink = self._start("superlink", [
            "flower-superlink", "--ssl-certfile", str(server / "superlink.crt"), "--ssl-keyfile",
            str(server / "superlink.key"), "--ssl-ca-certfile", self.ca, "--enable-supernode-auth",
            "--superexec-auth-secret-file", str(secret), "--isolation", "process", "--host", "127.0.0.1",
            "--port", str(self.port), "--database", str(self.home / "state.db"),
            "--disable-runtime-dependency-installation"])
        self._wait_for_port()
        self.superexec = self._start("serverapp", [
            "flower-superexec", "--runtime-api-address", f"127.0.0.1:{self.port}", "--root-certificates", self.ca,
            "--superexec-auth-secret-file", str(secret)])
        return self

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        out = (self.home / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen([str(BIN / command[0]), *command[1:]], env=self.env, stdout=out,
                                           stderr=subprocess.STDOUT, cwd=self.home))
        return self.procs[-1]

    def _wait_for_port(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise RuntimeError(f"the SuperLink exited: {self.log('superlink')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the SuperLink did not listen on {self.port} in {timeout} s")

    def register(self, keys_dir: Path) -> None:
        """docker/register_supernodes.py, as the deployment runs it: every *.pub, via the Control API."""
        result = subprocess.run([sys.executable, str(ROOT / "docker/register_supernodes.py")], capture_output=True,
                                text=True, cwd=self.home, env={**self.env, "KEYS_DIR": str(keys_dir),
                                                               "REVOKED_DIR": str(self.home / "revoked"),
                                                               "FLWR_CONNECTION": "local"})
        if result.returncode:
            raise RuntimeError(f"register_supernodes.py failed: {(result.stdout + result.stderr)[-2000:]}")

    def node_status(self) -> Counter | None:
        """How many registered nodes the SuperLink counts online, offline, ...; None: it did not answer."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Flower's CLI client says which SuperLink it uses
                control = init_http_client_from_connection(read_superlink_connection("local"))
            with contextlib.closing(control):
                return Counter(node.status for node in control.ListNodes(ListNodesRequest()).nodes_info)
        except Exception:  # a SuperLink too busy to answer in time
            return None

    def submit(self, run_config: str, deadline: float) -> tuple[str | None, str]:
        """docker/submit.py: `flwr run` of this checkout's app; the run's final status, and its output.
        submit.py ends when its log stream does, which a busy SuperLink's 500 ends with the run still
        going (it then says `running`): the run's status is asked again until the run ends."""
        end = time.monotonic() + deadline
        result = subprocess.run([sys.executable, str(ROOT / "docker/submit.py")], capture_output=True, text=True,
                                cwd=self.home, env={**self.env, "APP_DIR": str(ROOT), "FLWR_CONNECTION": "local",
                                                    "RUN_CONFIG": run_config, "RUN_DEADLINE": str(deadline)})
        output = result.stdout + result.stderr
        lines = json_objects(output)
        run_id = next((str(e["run_id"]) for e in lines if e.get("event") == "run_submitted"), None)
        status = next((e.get("status") for e in lines if e.get("event") == "run_outcome"), None)
        while run_id and not str(status).startswith("finished") and time.monotonic() < end:
            time.sleep(5)
            status = self.run_status(run_id) or status
        return status, output

    def run_status(self, run_id: str) -> str | None:
        result = subprocess.run([str(BIN / "flwr"), "ls", "local", "--run-id", run_id, "--format", "json"],
                                capture_output=True, text=True, env=self.env, cwd=self.home)
        try:
            runs = json.loads(result.stdout[result.stdout.find("{"):]).get("runs") or [{}]
        except ValueError:  # the SuperLink too busy to answer: ask again
            return None
        return runs[0].get("status")

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def events(self, name: str, event: str) -> list[dict]:
        return [e for e in json_objects(self.log(name)) if e.get("event") == event]

    def __exit__(self, *exc) -> None:
        for pid in children(self.superexec.pid):  # its ServerApp outlives it by minutes otherwise
            os.kill(pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.getenv("KEEP_FLEET_HOME"):
            print(f"kept {self.home}", file=sys.stderr)
        else:
            shutil.rmtree(self.home, ignore_errors=True)
