"""Benchmark: the simulation on a Ray cluster in Docker (docker/compose.ray.yaml) with 1, 2
and 4 Ray worker containers, next to Flower's default simulation, whose Ray runs inside one
container (docker/compose.simulation.yaml), for 1,000 and 10,000 virtual SuperNodes, in one run.

Each setup is started once and left up while one run per size is submitted
(`docker compose run submit`, as tests/test_ray.py does):
  start        `up --wait` of the setup: its Ray nodes and the SuperLink healthy
  first round  round 1 (Ray starts the ClientApp actors, and ships the FAB to the workers)
  rounds/min   60 / the mean time of rounds 2 to N-1 (from one `[ROUND n/N]` line to the next)
  wall         from submitting the run to its outcome (`submit` exits)
  spread       ClientApps per Ray node (the client_round lines' ray_node_ip)
25 sampled per round, one CPU per ClientApp. A worker offers RAY_WORKER_CPUS=1 (one ClientApp
at a time); the single container's Ray counts the machine's CPUs.

Usage (images built):  .venv/bin/python scripts/bench_ray.py
  BENCH_RAY_WORKERS (default "1 2 4"), BENCH_RAY_NODES ("1000 10000"), BENCH_RAY_ROUNDS (6)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import ROOT, events, round_times  # noqa: E402

WORKERS = [int(n) for n in os.getenv("BENCH_RAY_WORKERS", "1 2 4").split()]
SIZES = [int(n) for n in os.getenv("BENCH_RAY_NODES", "1000 10000").split()]
ROUNDS = int(os.getenv("BENCH_RAY_ROUNDS", "6"))
SAMPLED = 25
SUBNET = "10.213.52.0/26"  # neither compose.ray.yaml's default nor the tests'


def sh(*args: str, env: dict[str, str], timeout: int = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-4000:]}")
    return result


def ray_certs(folder: Path) -> Path:
    """A CA and a Ray node certificate for SUBNET, key files for the containers' uid: as
    root directly, else through the SuperLink image (certs/make-certs.sh)."""
    env = {"CERTS_OUT": str(folder), **({} if os.getuid() == 0 else {"CERTS_USE_DOCKER": "1"})}
    sh("certs/make-certs.sh", "init", "--nodes", "0", env=env)
    sh("certs/make-certs.sh", "ray", "--subnet", SUBNET, env=env)
    return folder / "ray"


class Setup:
    def __init__(self, name: str, file: str, services: list[str], knobs: dict[str, str]) -> None:
        self.name, self.services = name, services
        self.project = f"flowerdock-bench-ray-{os.getpid()}"
        self.compose = ["docker", "compose", "-p", self.project, "-f", file]
        self.env = knobs

    def start(self) -> float:
        started = time.monotonic()
        sh(*self.compose, "up", "-d", "--no-build", "--wait", *self.services, env=self.env)
        return time.monotonic() - started

    def run(self, nodes: int) -> dict:
        env = {**self.env, "SIM_NODES": str(nodes), "SIM_SAMPLED": str(SAMPLED), "SIM_ROUNDS": str(ROUNDS)}
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        started = time.monotonic()
        sh(*self.compose, "run", "--rm", "submit", env=env)
        wall = time.monotonic() - started
        superlink = sh(*self.compose, "ps", "-q", "superlink", env=self.env).stdout.strip()
        lines = sh("docker", "logs", "--since", since, superlink, env={}).stdout.splitlines()
        rounds = round_times(lines)  # round 1, 2, ..., N-1: from one `[ROUND n/N]` line to the next
        spread = Counter(e.get("ray_node_ip", "?") for e in events(lines) if e.get("event") == "client_round")
        return {"nodes": nodes, "first": rounds[0], "per_minute": 60 / statistics.fmean(rounds[1:]),
                "wall": wall, "spread": "/".join(str(n) for _, n in sorted(spread.items()))}

    def down(self) -> None:
        subprocess.run([*self.compose, "down", "-v", "--timeout", "5"], cwd=ROOT, env={**os.environ, **self.env},
                       capture_output=True)


def main() -> None:
    certs = ray_certs(Path(tempfile.mkdtemp(prefix="flowerdock-bench-ray-")))
    setups = [Setup("one container (Flower's Ray)", "docker/compose.simulation.yaml", ["superlink"], {})]
    setups += [Setup(f"Ray cluster, {n} worker{'s' if n > 1 else ''}", "docker/compose.ray.yaml",
                     ["ray-head", "ray-worker", "superlink"],
                     {"RAY_WORKERS": str(n), "RAY_WORKER_CPUS": "1", "RAY_CERTS_DIR": str(certs), "RAY_SUBNET": SUBNET})
               for n in WORKERS]
    results = []
    for setup in setups:
        try:
            start = setup.start()
            for nodes in SIZES:
                results.append((setup.name, start, setup.run(nodes)))
                print(f"  {setup.name}, started in {start:.0f} s: {results[-1][2]}", file=sys.stderr, flush=True)
        finally:
            setup.down()

    print(f"simulation on a Ray cluster vs one container: {SAMPLED} sampled per round, {ROUNDS} rounds "
          f"(rounds/min over rounds 2-{ROUNDS - 1}), one CPU per ClientApp, {os.cpu_count()} CPUs on this machine")
    print(f"  {'':<30}{'start (s)':>10}{'nodes':>8}{'round 1 (s)':>13}{'rounds/min':>12}{'wall (s)':>10}"
          f"  ClientApps per Ray node")
    for name, start, r in results:
        print(f"  {name:<30}{start:>10.1f}{r['nodes']:>8}{r['first']:>13.1f}{r['per_minute']:>12.1f}"
              f"{r['wall']:>10.1f}  {r['spread']}")
    baseline = {r["nodes"]: r for name, _, r in results if name == setups[0].name}
    for nodes in SIZES:
        ratios = ", ".join(f"{name.removeprefix('Ray cluster, ')}: {r['per_minute'] / baseline[nodes]['per_minute']:.2f}x"
                           for name, _, r in results if r["nodes"] == nodes and name != setups[0].name)
        print(f"  rounds/min vs one container, {nodes} nodes: {ratios}")


if __name__ == "__main__":
    main()
