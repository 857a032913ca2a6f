"""Fake SuperNodes (scripts/fake_supernodes.py) against a real SuperLink, as plain processes, no Docker.

  .venv/bin/python scripts/local_fleet_check.py check --nodes 10          # exit 0: the run completed,
                                                                           # every node ok every round
  .venv/bin/python scripts/local_fleet_check.py measure --nodes 20,50,100  # a table: idle pulls, rounds

Each size gets a fresh federation in a temporary folder, set up as the Docker deployment is:
certificates from certs/make_certs.py, a SuperLink with TLS, SuperNode authentication and an
SQLite database, in process isolation with its own SuperExec (flower-superexec) running the
ServerApp; the fake nodes' public keys registered through the Control API by
docker/register_supernodes.py; the run submitted by docker/submit.py (`flwr run`), whose status is
then asked until the run ends (submit.py gives up with the run still going when a busy SuperLink
breaks its log stream). The fake nodes idle for --idle seconds first (idle pull latency), then
serve the run. Without a gateway: the SuperLink's own port. `check` passes when the run ends
finished:completed with every node `ok` in every round's client_round lines. KEEP_FLEET_HOME=1
keeps each temporary folder (logs, database) for a look afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.proto.control_pb2 import ListNodesRequest

from fake_supernodes import FakeFleet, Settings, make_keys, summarize

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# No test set on the server: fake updates do not train the model, so the model guard (and the
# "final model no better than the start" rule) would fail a run that worked (app/model_guard.py).
RUN_CONFIG = ('num-server-rounds={rounds} model="mlp" mlp-hidden=8 min-nodes={k} expected-nodes={k} '
              'min-replies={replies} round-timeout={timeout} local-epochs=1 server-test-set="none"')


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


class Sampler(threading.Thread):
    """Every few seconds: the SuperLink's CPU and memory, and the nodes it counts offline."""

    def __init__(self, federation: Federation, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.federation, self.every, self.halt = federation, every, threading.Event()
        self.peak_rss, self.max_offline, self.status_errors = 0.0, 0, 0
        self.serverapp_cpu: dict[int, float] = {}  # the SuperExec's children (the ServerApp): CPU seconds

    def run(self) -> None:
        pid, superexec = self.federation.superlink.pid, self.federation.superexec.pid
        while not self.halt.wait(self.every):
            self.peak_rss = max(self.peak_rss, rss_mib(pid))
            for child in children(superexec):
                try:
                    self.serverapp_cpu[child] = cpu_seconds(child)
                except OSError:  # ended since
                    pass
            counts = self.federation.node_status()
            self.status_errors += counts is None
            self.max_offline = max(self.max_offline, (counts or {}).get("offline", 0))


def rounds_of(federation: Federation, k: int, rounds: int) -> dict:
    """From the ServerApp's lines: per (round, phase), the nodes `ok`, the others' reasons, the durations."""
    lines = federation.events("serverapp", "client_round")
    phases = [(r, "train") for r in range(1, rounds + 1)] + [(rounds, "evaluate")]  # one-exchange (the default)
    ok = {p: {e["node_id"] for e in lines if (e["server_round"], e["phase"]) == p and e["status"] == "ok"}
          for p in phases}
    others = sorted({f"{e['status']}:{e.get('reason')}" for e in lines if e["status"] != "ok"})
    durations = {(e["server_round"], e["phase"]): e["duration_s"]
                 for e in federation.events("serverapp", "round_summary")}
    return {"every_node_ok": all(len(ok[p]) == k for p in phases),
            "ok_per_phase": {f"{r}/{phase}": len(ok[(r, phase)]) for r, phase in phases},
            "replies_lost": sum(k - len(ok[p]) for p in phases), "not_ok": others,
            "train_round_s": [durations.get((r, "train")) for r in range(1, rounds + 1)]}


def superlink_errors(federation: Federation) -> dict[str, int]:
    """The SuperLink's error lines, by endpoint and the first words of the error."""
    counts: Counter = Counter()
    for event in json_objects(federation.log("superlink")):
        if event.get("level") == "error":
            # "[/v1/fleet/pull-object][UnexpectedError:OperationalError] (sqlite3.OperationalError) database is locked"
            head = str(event.get("event", "")).split("\n")[0]
            endpoint = head[1:].split("]", 1)[0] if head.startswith("[") else "-"
            counts[f"{endpoint}: {head.rsplit(') ', 1)[-1][:60]}"] += 1
    return dict(counts)


def one_size(k: int, args: argparse.Namespace) -> dict:
    """A fresh federation, K fake nodes idle for args.idle seconds, then one run: what it measured."""
    with Federation() as federation:
        keys = make_keys(federation.home / "keys", k)
        federation.register(federation.home / "keys")
        settings = Settings(f"127.0.0.1:{federation.port}", federation.ca, ramp=min(30.0, k / 10))
        fleet = FakeFleet(settings, keys, args.processes or min(8, math.ceil(k / 25))).start()
        run_config = RUN_CONFIG.format(rounds=args.rounds, k=k, replies=math.ceil(args.quorum * k),
                                       timeout=args.round_timeout)
        try:
            deadline = time.monotonic() + 60 + k
            while (federation.node_status() or {}).get("online", 0) < k and time.monotonic() < deadline:
                time.sleep(2)
            sampler, pids = Sampler(federation), [federation.superlink.pid] + fleet.pids
            sampler.start()
            t0, cpu0 = time.time(), [cpu_seconds(pid) for pid in pids]
            time.sleep(args.idle)
            t1, cpu1 = time.time(), [cpu_seconds(pid) for pid in pids]
            outcome, output = federation.submit(run_config, deadline=args.deadline)
            t2, cpu2 = time.time(), [cpu_seconds(pid) for pid in pids]
            sampler.halt.set()
        finally:
            records = fleet.stop()
        whole = summarize(records)
        return {"nodes": k, "processes": fleet.processes, "run_config": run_config, "outcome": outcome,
                "activated": whole["nodes_activated"], "activation_s_p50": whole["activation_s_p50"],
                "node_failures": whole["node_failures"], "node_failure_examples": whole["node_failure_examples"],
                "idle": summarize(records, t0, t1), "run": summarize(records, t1, t2), "run_s": round(t2 - t1, 1),
                "superlink_cores_idle": round((cpu1[0] - cpu0[0]) / (t1 - t0), 2),
                "superlink_cores_run": round((cpu2[0] - cpu1[0]) / (t2 - t1), 2),
                "fleet_cores_idle": round((sum(cpu1[1:]) - sum(cpu0[1:])) / (t1 - t0), 2),
                "fleet_cores_run": round((sum(cpu2[1:]) - sum(cpu1[1:])) / (t2 - t1), 2),
                "serverapp_cores_run": round(sum(sampler.serverapp_cpu.values()) / (t2 - t1), 2),
                "superlink_peak_rss_mib": round(sampler.peak_rss, 1), "max_nodes_offline": sampler.max_offline,
                "node_list_failures": sampler.status_errors,
                "superlink_errors": superlink_errors(federation), **rounds_of(federation, k, args.rounds),
                "submit_tail": "" if outcome == "finished:completed" else output[-1500:]}


def table(results: list[dict]) -> str:
    head = ("K", "idle pull p50/p95/p99 s", "run pull p50/p99 s", "train rounds s", "lost", "SuperLink cores idle/run",
            "RSS MiB", "ServerApp cores", "fleet cores idle/run", "offline", "SuperLink errors", "outcome")
    rows = [head]
    for r in results:
        idle, run = r["idle"], r["run"]
        rows.append((str(r["nodes"]),
                     "/".join(str(idle[f"idle_pull_latency_s_p{q}"]) for q in (50, 95, 99)),
                     f"{run['pull_latency_s_p50']}/{run['pull_latency_s_p99']}",
                     "/".join(f"{s:.1f}" for s in r["train_round_s"] if s is not None), str(r["replies_lost"]),
                     f"{r['superlink_cores_idle']}/{r['superlink_cores_run']}", str(r["superlink_peak_rss_mib"]),
                     str(r.get("serverapp_cores_run")), f"{r['fleet_cores_idle']}/{r['fleet_cores_run']}",
                     str(r["max_nodes_offline"]),
                     str(sum(r["superlink_errors"].values())), str(r["outcome"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["check", "measure"])
    parser.add_argument("--nodes", default="10", help="K, or sizes separated by commas (measure)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle pulls measured before the run")
    parser.add_argument("--processes", type=int, default=0, help="fake-node processes (0: one per 25 nodes, <= 8)")
    parser.add_argument("--quorum", type=float, help="min-replies as a share of K (check: 1; measure: 0.9, so "
                                                     "that a lost reply costs a straggler wait, not a round-timeout)")
    parser.add_argument("--round-timeout", type=int, default=300)
    parser.add_argument("--deadline", type=int, default=1800, help="seconds a run may take; then it is stopped")
    args = parser.parse_args()
    args.quorum = args.quorum or (1.0 if args.mode == "check" else 0.9)
    results = []
    for k in (int(n) for n in args.nodes.split(",")):
        results.append(one_size(k, args))
        print(json.dumps(results[-1]), flush=True)
    print(table(results), file=sys.stderr)
    return 0 if all(r["outcome"] == "finished:completed" and r["every_node_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
