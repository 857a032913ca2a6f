"""Benchmark: how far one SuperLink goes with real SuperNodes, each its own container.

For each N: the server side of a deployment (docker/compose.server.yaml: SuperLink,
ServerApp, gateway) and N SuperNode containers, each with its own key, that reach the
SuperLink through the gateway's published port over TLS, as sites would; then a run in
which every node trains and evaluates every round. Printed per N:

  start      seconds from `up` to every SuperNode online
  round      mean seconds of the steady rounds (2..), train + evaluate
  SuperLink  CPU (cores, mean over the run) and peak memory (MiB, page cache included)
  gateway    CPU (cores) over the run
  SuperNode  memory per container (MiB): mean and largest, at the end of the run

It goes on to the largest N this machine's memory allows (from the per-node memory
measured at the last size, leaving 3 GiB), unless told the sizes, and says where it
broke: a run that fails, or the memory. On one host every SuperNode reaches the gateway
from one NAT address, so the per-client limits are raised to N times their default
(they exist for one site's address, not for a whole federation's).

    .venv/bin/python scripts/bench_superlink.py [N ...]     (default: 10 25 50 max; images built)
"""

from __future__ import annotations

import json
import os
from collections import Counter
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import ROOT, events  # noqa: E402
PUBLIC_NAME = "superlink.flowerdock.test"
ROUNDS = 3
MiB = 2**20
HEADROOM = 3 * 2**30  # memory left to the engine, the server side and the host


def sh(*args: str, env: dict | None = None, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {result.returncode}: {result.stderr[-1500:]}")
    return result


def cgroup(container: str, v1: str, v2: str) -> Path:
    full = sh("docker", "inspect", "-f", "{{.Id}}", container).stdout.strip()
    for path in (Path(f"/sys/fs/cgroup/{v1.replace('ID', full)}"), Path(f"/sys/fs/cgroup/{v2.replace('ID', full)}")):
        if path.exists():
            return path
    raise RuntimeError(f"no cgroup file for {container}")


def cpu_seconds(container: str) -> float:
    path = cgroup(container, "cpuacct/docker/ID/cpuacct.usage", "system.slice/docker-ID.scope/cpu.stat")
    text = path.read_text()
    if path.name == "cpu.stat":
        return int(text.split("usage_usec")[1].split()[0]) / 1e6
    return int(text) / 1e9


def memory(container: str, peak: bool = False) -> int:
    name = ("memory.max_usage_in_bytes", "memory.peak") if peak else ("memory.usage_in_bytes", "memory.current")
    return int(cgroup(container, f"memory/docker/ID/{name[0]}", f"system.slice/docker-ID.scope/{name[1]}").read_text())


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def clients_file(folder: Path, certs: Path, nodes: int) -> Path:
    """One compose file, N SuperNode services (one network: N projects would use up Docker's
    address pools), each docker/compose.client.yaml's SuperNode with its own key."""
    lines = ["services:"]
    for n in range(1, nodes + 1):
        lines += [f"  supernode-{n}:",
                  f"    extends: {{file: {ROOT}/tests/compose.host-gateway.yaml, service: supernode}}",
                  f"    environment: {{PARTITION_ID: '{n - 1}', NUM_PARTITIONS: '{nodes}'}}",
                  "    volumes: !override",
                  f"      - {{type: bind, source: {certs}/supernode-{n}, target: /certs, read_only: true}}",
                  # Sites each probe their own SuperNode on their own host; N probes every 2 s
                  # on this one would cost N x 0.05 cores (1.25 of 2 at N = 25) and starve the rest.
                  "    healthcheck: {interval: 30s}"]
    lines += ["networks:", "  flower: {}"]
    path = folder / "clients.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Federation:
    def __init__(self, nodes: int, folder: Path) -> None:
        self.nodes, self.folder = nodes, folder
        self.certs = folder / "certs"
        sh(sys.executable, "certs/make_certs.py", "init", "--out", str(self.certs), "--san", f"DNS:{PUBLIC_NAME}",
           "--nodes", str(nodes))
        self.fleet, self.control = free_port(), free_port()
        self.server_env = {"SERVER_CERTS_DIR": str(self.certs / "server"), "FLEET_PORT": str(self.fleet),
                           "CONTROL_PORT": str(self.control), "RESTART": "no", "SUPERLINK_CPU_SHARES": "4096",
                           "FLEET_RATE_PER_CLIENT": f"{100 * nodes}r/s", "FLEET_BURST_PER_CLIENT": str(200 * nodes),
                           "FLEET_CONNECTIONS_PER_CLIENT": str(32 * nodes)}
        self.server = ["docker", "compose", "-p", f"fd-bench-server-{nodes}", "-f", "docker/compose.server.yaml"]
        self.clients = ["docker", "compose", "-p", f"fd-bench-clients-{nodes}", "-f",
                        str(clients_file(folder, self.certs, nodes))]
        self.client_env = {"SUPERLINK": f"{PUBLIC_NAME}:{self.fleet}", "RESTART": "no"}
        self.flwr_home = folder / "flwr"
        self.flwr_home.mkdir()
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n[superlink.bench]\naddress = "localhost:{self.control}"\n'
            f'root-certificates = "{self.certs / "user/ca.crt"}"\n')

    def flwr(self, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
        flwr = str(Path(sys.executable).parent / "flwr")
        return sh(flwr, *args, env={"FLWR_HOME": str(self.flwr_home), "LOG_FORMAT": "console"}, timeout=timeout,
                  check=False)

    def online(self) -> int:
        out = self.flwr("supernode", "list", "bench", "--format", "json").stdout
        try:
            return sum(n["status"] == "online" for n in json.loads(out[out.index("{"):])["nodes"])
        except ValueError:
            return 0

    def wait_until_finished(self, since: float) -> str:
        """The run's last status from `flwr ls`: `flwr run --stream` returns, exit 0, at the first
        error the Control API gives its stream, with the run still going."""
        status = "unknown"
        while time.monotonic() - since < 3 * 3600:
            out = self.flwr("ls", "bench", "--format", "json").stdout
            try:
                runs = json.loads(out[out.index("{"):])["runs"]
                status = max(runs, key=lambda r: r["pending-at"])["status"] if runs else status  # the one run
            except (ValueError, KeyError):
                pass  # the Control API failed this one: ask again
            if status.startswith("finished"):
                return status
            time.sleep(5)
        return status

    def container(self, compose: list[str], env: dict, service: str) -> str:
        return sh(*compose, "ps", "-q", service, env=env).stdout.split()[0]

    def measure(self) -> dict:
        sh(*self.server, "up", "-d", "--no-build", "--wait", "gateway", "serverapp", env=self.server_env, timeout=600)
        sh(*self.server, "up", "--no-build", "--exit-code-from", "register-supernodes", "register-supernodes",
           env=self.server_env, timeout=1200)
        started = time.monotonic()
        sh(*self.clients, "up", "-d", "--no-build", env=self.client_env, timeout=3600)
        while self.online() < self.nodes:
            if time.monotonic() - started > 1800:
                raise RuntimeError(f"only {self.online()} of {self.nodes} SuperNodes online after 30 min")
            time.sleep(5)
        start_s = time.monotonic() - started
        superlink = self.container(self.server, self.server_env, "superlink")
        gateway = self.container(self.server, self.server_env, "gateway")
        serverapp = self.container(self.server, self.server_env, "serverapp")
        cpu = {c: cpu_seconds(c) for c in (superlink, gateway)}
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], memory(superlink))
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run_started = time.monotonic()
        result = self.flwr("run", ".", "bench", "--stream", "--run-config",
                           f"num-server-rounds={ROUNDS} min-nodes={self.nodes} expected-nodes={self.nodes} "
                           f"min-replies={self.nodes} fraction-train=1.0 fraction-evaluate=1.0 node-wait-timeout=600 "
                           "round-timeout=600")
        status = self.wait_until_finished(run_started)
        wall = time.monotonic() - run_started
        stop.set()
        watcher.join()
        run_events = events(sh("docker", "logs", serverapp).stdout.splitlines())
        rounds: dict[int, float] = {}
        for e in run_events:
            if e["event"] == "round_summary":
                rounds[e["server_round"]] = rounds.get(e["server_round"], 0.0) + e["duration_s"]
        ok = sum(e["event"] == "client_round" and e["status"] == "ok" for e in run_events)
        out = sh("docker", "logs", superlink)
        logged = (out.stdout + out.stderr).splitlines()
        superlink_errors = Counter(e["event"].split("\n")[0][:120] for e in events(logged) if e.get("level") == "error")
        outcomes = Counter(f"{e['status']}:{e.get('reason') or ''}" for e in run_events if e["event"] == "client_round")
        running = sh(*self.clients, "ps", "-q", env=self.client_env).stdout.split()
        exited = sh(*self.clients, "ps", "-a", "--status", "exited", "--format", "{{.Name}} {{.Status}}",
                    env=self.client_env).stdout.strip().splitlines()
        node_memory = [memory(c) / MiB for c in running]
        steady = [rounds[r] for r in sorted(rounds)][1:] or list(rounds.values())
        return {"nodes": self.nodes, "status": status,
                "completed": status == "finished:completed" and ok == self.nodes * ROUNDS * 2,
                "replies_ok": ok, "outcomes": dict(outcomes), "exited": exited, "superlink_errors": dict(superlink_errors),
                "run_tail": (result.stdout + result.stderr)[-600:] if result.returncode else "", "start_s": start_s, "round_s": statistics.fmean(steady) if steady else float("nan"),
                "superlink_cpu": (cpu_seconds(superlink) - cpu[superlink]) / wall,
                "gateway_cpu": (cpu_seconds(gateway) - cpu[gateway]) / wall,
                "superlink_peak_mib": max(peak[0], 0) / MiB,
                "node_mean_mib": statistics.fmean(node_memory), "node_max_mib": max(node_memory)}

    def down(self) -> None:
        sh(*self.clients, "down", "-v", "-t", "5", env=self.client_env, check=False, timeout=1200)
        sh(*self.server, "down", "-v", "-t", "5", env=self.server_env, check=False, timeout=600)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nodes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fd-bench-superlink-") as folder:
        federation = Federation(nodes, Path(folder))
        try:
            return federation.measure()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"nodes": nodes, "completed": False, "error": str(exc)[-300:]}
        finally:
            federation.down()


def main() -> None:
    asked = sys.argv[1:] or ["10", "25", "50", "max"]
    results: list[dict] = []
    for size in asked:
        if size == "max":
            last = next((r for r in reversed(results) if r.get("completed")), None)
            if last is None:
                break
            per_node = last["node_max_mib"] * MiB
            nodes = int((available_memory() - HEADROOM) // per_node)
            if nodes <= last["nodes"]:
                print(f"  max: no more than {last['nodes']} SuperNodes fit beside 3 GiB of headroom "
                      f"({per_node / MiB:.0f} MiB each)")
                break
        else:
            nodes = int(size)
            last = next((r for r in reversed(results) if r.get("completed")), None)
            need = nodes * last["node_max_mib"] * MiB + HEADROOM if last else 0
            if need > available_memory():
                # Starting them anyway would hand the host's OOM killer the engine and this script.
                results.append({"nodes": nodes, "completed": False, "error":
                                f"not started: {nodes} x {last['node_max_mib']:.0f} MiB + 3 GiB headroom = "
                                f"{need / 2**30:.1f} GiB, {available_memory() / 2**30:.1f} GiB available"})
                print(f"  {nodes} SuperNodes do not fit this machine's memory", file=sys.stderr, flush=True)
                continue  # the largest that fits ("max") may still follow
        print(f"  measuring {nodes} SuperNodes ...", file=sys.stderr, flush=True)
        results.append(run(nodes))
        r = results[-1]
        print(f"  {nodes} SuperNodes: {'done' if r.get('completed') else 'not done'}; "
              f"{ {k: v for k, v in r.items() if k not in ('outcomes', 'run_tail', 'superlink_errors')} }", file=sys.stderr, flush=True)
        if not r.get("completed"):
            break  # where it broke
    print(f"one SuperLink, N SuperNode containers through the gateway (TLS, node keys), {ROUNDS} rounds, "
          f"every node every round; {os.cpu_count()} cores, {available_memory() / 2**30:.1f} GiB available")
    print(f"  {'N':>4}{'done':>6}{'start s':>9}{'round s':>9}{'SuperLink cores':>17}{'peak MiB':>10}"
          f"{'gateway cores':>15}{'SuperNode MiB mean/max':>24}")
    for r in results:
        if "error" in r:
            print(f"  {r['nodes']:>4}{'no':>6}  broke: {r['error']}")
            continue
        print(f"  {r['nodes']:>4}{'yes' if r['completed'] else 'no':>6}{r['start_s']:>9.0f}{r['round_s']:>9.1f}"
              f"{r['superlink_cpu']:>17.2f}{r['superlink_peak_mib']:>10.0f}{r['gateway_cpu']:>15.2f}"
              f"{r['node_mean_mib']:>15.0f} / {r['node_max_mib']:.0f}")
        if not r["completed"]:
            print(f"        run {r['status']}; replies: {r['outcomes']}; exited: {r['exited'] or 'none'}; {r['run_tail']}")
            for error, count in r["superlink_errors"].items():
                print(f"        SuperLink error x{count}: {error}")
    done = [r for r in results if r.get("completed")]
    if len(done) > 1:
        first, last = done[0], done[-1]
        print(f"  {last['nodes'] / first['nodes']:.1f}x the nodes: {last['round_s'] / first['round_s']:.2f}x the round, "
              f"{last['superlink_cpu'] / max(first['superlink_cpu'], 1e-9):.2f}x the SuperLink's CPU, "
              f"{last['superlink_peak_mib'] / first['superlink_peak_mib']:.2f}x its memory")


if __name__ == "__main__":
    main()
