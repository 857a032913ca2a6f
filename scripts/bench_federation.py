"""Benchmark: time per round of the same federation in Docker and as plain processes.

Both runs: 3 SuperNodes (subprocess isolation), a SuperLink in process isolation
with a separate SuperExec for the ServerApp, 3 rounds, every node in every round;
both with TLS, SuperNode authentication and the SuperExec secret.
Round time = time between the starts of consecutive rounds (Flower's `[ROUND n/N]` lines).
Usage (images built, e.g. by `make images`):  .venv/bin/python scripts/bench_federation.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODES, ROUNDS, PORT = 3, 3, 18000
RUN_CONFIG = f"num-server-rounds={ROUNDS} min-nodes={NODES} fraction-train=1.0 fraction-evaluate=1.0"



def flower_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's Flower processes: this venv's programs first on
    PATH (the daemons start flwr-serverapp & co. by name), the given FLWR_HOME, no
    phoning home, JSON logs, one thread per process and Ray on this machine alone,
    as in the images and the Makefile."""
    bin_dir = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "LOG_FORMAT": "json", "OMP_NUM_THREADS": "1",
            "RAY_ADDRESS": "local", **extra}

def events(lines: list[str]) -> list[dict]:
    """The JSON lines among lines, each with its timestamp as seconds ("t")."""
    parsed = []
    for line in lines:
        try:
            event = json.loads(line)
            event["t"] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        parsed.append(event)
    return parsed


def round_times(lines: list[str]) -> list[float]:
    """Seconds between the starts of consecutive rounds (Flower's "[ROUND n/N]" lines)."""
    stamps = [e["t"] for e in events(lines) if str(e.get("event", "")).startswith("[ROUND ")]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def in_docker(logs: dict[str, list[str]] | None = None, rounds: int = ROUNDS,
              run_config: str = "") -> tuple[list[float], float]:
    return compose_run("flowerdock-bench", [], {"NUM_SUPERNODES": str(NODES), "NUM_ROUNDS": str(rounds),
                                                "EXTRA_RUN_CONFIG": run_config}, "serverapp", logs)


def compose_run(project: str, files: list[str], knobs: dict[str, str], log_service: str,
                logs: dict[str, list[str]] | None = None) -> tuple[list[float], float]:
    """`up` a compose project until its `submit` service ends: round times from
    log_service's log, and the time from `up` to the end. logs, if given,
    receives every container's lines by container name."""
    env = {**os.environ, **knobs}
    compose = ["docker", "compose", "-p", project, *(arg for f in files for arg in ("-f", f))]
    try:
        start = time.monotonic()
        subprocess.run([*compose, "up", "--no-build", "--exit-code-from", "submit", "submit"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=1800)
        total = time.monotonic() - start
        container = subprocess.run([*compose, "ps", "-a", "-q", log_service], cwd=ROOT, env=env,
                                   capture_output=True, text=True).stdout.strip()
        if logs is not None:
            for name in subprocess.run([*compose, "ps", "-a", "--format", "{{.Name}}"], cwd=ROOT, env=env,
                                       capture_output=True, text=True).stdout.split():
                logs[name] = subprocess.run(["docker", "logs", name], capture_output=True,
                                            text=True).stdout.splitlines()
        lines = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
        return round_times(lines.splitlines()), total
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "5"], cwd=ROOT, env=env, capture_output=True)


def as_processes(app: Path = ROOT, run_config: str = RUN_CONFIG,
                 logs: dict[str, list[str]] | None = None) -> tuple[list[float], float]:
    """The federation as plain processes on this host (Flower's own flwr-clientapp:
    a cold start per message). logs, if given, receives every process's lines."""
    home = Path(tempfile.mkdtemp(prefix="flowerdock-bench-"))
    certs = home / "certs"
    subprocess.run([sys.executable, str(ROOT / "certs/make_certs.py"), "init", "--out", str(certs),
                    "--nodes", str(NODES), "--owner", f"{os.getuid()}:{os.getgid()}"], check=True, capture_output=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n[superlink.bench]\n'
                                      f'address = "127.0.0.1:{PORT}"\nroot-certificates = "{certs}/user/ca.crt"\n')
    bin_dir = Path(sys.executable).parent
    env = flower_env(home, APP_OUTPUT_DIR=str(home))
    serverapp_log = home / "serverapp.log"
    procs = []
    try:
        def start(args, out=None):
            out = out or (home / f"{args[0]}-{len(procs)}.log").open("w")
            procs.append(subprocess.Popen([str(bin_dir / args[0]), *args[1:]], env=env, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=home))
        server = certs / "server"
        secret = ["--superexec-auth-secret-file", str(server / "superexec.secret")]
        start(["flower-superlink", "--ssl-certfile", str(server / "superlink.crt"), "--ssl-keyfile",
               str(server / "superlink.key"), "--ssl-ca-certfile", str(server / "ca.crt"), "--enable-supernode-auth",
               *secret, "--isolation", "process", "--host", "127.0.0.1",
               "--port", str(PORT), "--disable-runtime-dependency-installation"])
        time.sleep(5)
        for key in sorted((server / "supernodes").glob("*.pub")):
            subprocess.run([str(bin_dir / "flwr"), "supernode", "register", str(key), "bench"],
                           env=env, check=True, capture_output=True, cwd=home)
        start(["flower-superexec", "--runtime-api-address", f"localhost:{PORT}", "--root-certificates",
               str(server / "ca.crt"), *secret], out=serverapp_log.open("w"))
        for n in range(NODES):
            node = certs / f"supernode-{n + 1}"
            start(["flower-supernode", "--superlink", f"localhost:{PORT}", "--root-certificates", str(node / "ca.crt"),
                   "--auth-supernode-private-key", str(node / "supernode.key"), "--port", str(19100 + n),
                   "--node-config", f"partition-id={n} num-partitions={NODES}"])
        begin = time.monotonic()
        subprocess.run([str(bin_dir / "flwr"), "run", str(app), "bench", "--stream", "--run-config", run_config],
                       env=env, check=True, capture_output=True, cwd=home, timeout=900)
        total = time.monotonic() - begin
        if logs is not None:
            for path in home.glob("*.log"):
                logs[path.stem] = path.read_text().splitlines()
        return round_times(serverapp_log.read_text().splitlines()), total
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)


def print_comparison(title: str, baseline: tuple[str, list[float], float],
                     measured: tuple[str, list[float], float]) -> None:
    """Per-round and total times of two runs of one benchmark, and their ratio."""
    print(title)
    print(f"  {'':<22}{'per round (s)':>14}{'rounds':>30}{'total (s)':>12}")
    for name, rounds, total in (baseline, measured):
        print(f"  {name:<22}{statistics.fmean(rounds):>14.1f}{str([round(r, 1) for r in rounds]):>30}{total:>12.1f}")
    ratio = statistics.fmean(measured[1]) / statistics.fmean(baseline[1])
    print(f"  {measured[0]} / {baseline[0]}, per round: {ratio:.2f}x")


if __name__ == "__main__":
    plain = ("plain processes", *as_processes())
    docker = ("docker compose", *in_docker())
    print_comparison(f"federation: {NODES} SuperNodes, {ROUNDS} rounds, train + evaluate each round, TLS", plain, docker)
