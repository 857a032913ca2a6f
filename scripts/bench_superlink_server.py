"""The server side that `make bench-superlink` loads: a deployment's server in Docker
(docker/compose.server.yaml), N registered node keys, Flower's CLI pointed at its Control port,
and what its containers use (cgroup CPU and memory)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench_federation import ROOT, events
from fake_fleet import make_keys

MiB = 2**20
FLWR_HOME_LOCK = threading.Lock()  # the sampler's thread and the main one both ask
NO_CAP = 65535  # the most nginx's limit_conn takes: no cap, in effect


def sh(*args: str, env: dict | None = None, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {result.returncode}: {result.stderr[-1500:]}")
    return result


def cgroup_file(container: str, v1: str, v2: str) -> Path:
    full = sh("docker", "inspect", "-f", "{{.Id}}", container).stdout.strip()
    for path in (Path(f"/sys/fs/cgroup/{v1.replace('ID', full)}"), Path(f"/sys/fs/cgroup/{v2.replace('ID', full)}")):
        if path.exists():
            return path
    raise RuntimeError(f"no cgroup file for {container}")


def container_cpu(container: str) -> float:
    path = cgroup_file(container, "cpuacct/docker/ID/cpuacct.usage", "system.slice/docker-ID.scope/cpu.stat")
    text = path.read_text()
    return int(text.split("usage_usec")[1].split()[0]) / 1e6 if path.name == "cpu.stat" else int(text) / 1e9


def container_memory(container: str) -> int:
    return int(cgroup_file(container, "memory/docker/ID/memory.usage_in_bytes",
                           "system.slice/docker-ID.scope/memory.current").read_text())


def process_cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Federation:
    """The server side in Docker, N registered keys, and Flower's CLI pointed at its Control port."""

    def __init__(self, k: int, shed: int | None, folder: Path) -> None:
        self.k, self.folder, self.certs = k, folder, folder / "certs"
        sh(sys.executable, "certs/make_certs.py", "init", "--out", str(self.certs), "--nodes", "0")
        self.keys = make_keys(folder / "keys", k)
        (self.certs / "server/supernodes").mkdir()
        for pub in (folder / "keys").glob("*.pub"):  # where register-supernodes reads them
            (self.certs / "server/supernodes" / pub.name).write_bytes(pub.read_bytes())
        self.fleet_port, self.control_port = free_port(), free_port()
        self.env = {"SERVER_CERTS_DIR": str(self.certs / "server"), "FLEET_PORT": str(self.fleet_port),
                    "CONTROL_PORT": str(self.control_port), "RESTART": "no",
                    "FLEET_RATE_PER_CLIENT": f"{100 * k}r/s", "FLEET_BURST_PER_CLIENT": str(200 * k),
                    "FLEET_CONNECTIONS_PER_CLIENT": str(min(32 * k, NO_CAP)),
                    **({"FLEET_REQUESTS_TOTAL": str(shed or NO_CAP)} if shed is not None else {})}
        self.compose = ["docker", "compose", "-p", f"fd-bench-superlink-{k}", "-f", "docker/compose.server.yaml"]
        self.flwr_home = folder / "flwr"
        self.flwr_home.mkdir()
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n[superlink.bench]\naddress = "localhost:{self.control_port}"\n'
            f'root-certificates = "{self.certs / "user/ca.crt"}"\n')

    def up(self) -> None:
        sh(*self.compose, "up", "-d", "--no-build", "--wait", "gateway", "serverapp", env=self.env, timeout=600)
        sh(*self.compose, "up", "--no-build", "--exit-code-from", "register-supernodes", "register-supernodes",
           env=self.env, timeout=1200)

    def container(self, service: str) -> str:
        return sh(*self.compose, "ps", "-q", service, env=self.env).stdout.split()[0]

    def logs(self, service: str) -> list[dict]:
        out = sh("docker", "logs", self.container(service))
        return events((out.stdout + out.stderr).splitlines())

    def flwr(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return sh(str(Path(sys.executable).parent / "flwr"), *args, timeout=timeout, check=False,
                  env={"FLWR_HOME": str(self.flwr_home), "LOG_FORMAT": "console"})

    def node_status(self) -> Counter | None:
        """How many nodes the SuperLink counts online, offline, ...; None: it did not answer."""
        from flwr.cli.flower_config import read_superlink_connection
        from flwr.cli.utils import init_http_client_from_connection
        from flwr.proto.control_pb2 import ListNodesRequest

        try:
            with FLWR_HOME_LOCK, contextlib.redirect_stdout(io.StringIO()):  # the client says which SuperLink
                before = os.environ.get("FLWR_HOME")
                os.environ["FLWR_HOME"] = str(self.flwr_home)  # where Flower's CLI reads the connection
                try:
                    control = init_http_client_from_connection(read_superlink_connection("bench"))
                finally:  # as it was: a test process goes on after this federation
                    os.environ.pop("FLWR_HOME") if before is None else os.environ.update(FLWR_HOME=before)
            with contextlib.closing(control):
                return Counter(node.status for node in control.ListNodes(ListNodesRequest()).nodes_info)
        except Exception:  # too busy to answer in time
            return None

    def run(self, run_config: str, deadline: float) -> tuple[str, float]:
        """Submit one run of this app; its final status (or the last seen, stopped at the deadline), seconds."""
        start = time.monotonic()
        out = self.flwr("run", ".", "bench", "--run-config", run_config, "--format", "json")
        text = out.stdout + out.stderr
        try:
            run_id = str(json.loads(text[text.index("{"):])["run-id"])
        except (ValueError, KeyError):
            return f"not submitted: {text[-300:]}", time.monotonic() - start
        status = "pending"
        while time.monotonic() - start < deadline:
            time.sleep(5)
            listed = self.flwr("ls", "bench", "--run-id", run_id, "--format", "json").stdout
            with contextlib.suppress(ValueError, KeyError, IndexError):
                status = json.loads(listed[listed.index("{"):])["runs"][0]["status"]
            if status.startswith("finished"):
                return status, time.monotonic() - start
        self.flwr("stop", run_id, "bench")
        return f"{status} after {deadline:.0f} s (stopped)", time.monotonic() - start

    def down(self) -> None:
        sh(*self.compose, "down", "-v", "-t", "5", env=self.env, check=False, timeout=600)


class Sampler(threading.Thread):
    """Every 10 s: the nodes the SuperLink counts offline, and its memory."""

    def __init__(self, federation: Federation, superlink: str) -> None:
        super().__init__(daemon=True)
        self.federation, self.superlink, self.halt = federation, superlink, threading.Event()
        self.max_offline, self.peak_mib, self.unanswered = 0, 0.0, 0

    def run(self) -> None:
        while not self.halt.wait(10):
            counts = self.federation.node_status()
            self.unanswered += counts is None
            self.max_offline = max(self.max_offline, (counts or {}).get("offline", 0))
            with contextlib.suppress(RuntimeError, OSError):
                self.peak_mib = max(self.peak_mib, container_memory(self.superlink) / MiB)


def cpu_seconds(containers: dict[str, str], fleet_pids: list[int]) -> dict[str, float]:
    """CPU seconds so far; NaN for a container that has ended (its cgroup is gone)."""
    seconds = {"fleet": sum(process_cpu(pid) for pid in fleet_pids)}
    for name, container in containers.items():
        try:
            seconds[name] = container_cpu(container)
        except RuntimeError:
            seconds[name] = math.nan
    return seconds


def ended(containers: dict[str, str]) -> dict[str, str]:
    """The server-side containers that are not running any more: how each ended, its last error line."""
    gone = {}
    for name, container in containers.items():
        state = sh("docker", "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}}",
                   container, check=False).stdout.strip()
        if not state.startswith("running"):
            out = sh("docker", "logs", "--tail", "200", container, check=False)
            errors = [e for e in events((out.stdout + out.stderr).splitlines()) if e.get("level") in ("error", "critical")]
            gone[name] = f"{state}; last error: {str(errors[-1].get('event'))[:300] if errors else 'none logged'}"
    return gone
