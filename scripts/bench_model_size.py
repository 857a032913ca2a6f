"""Benchmark: how a round scales with the model's size, in the Docker federation.

For each size (run config `extra-model-mb`: MiB of fixed random numbers added to the 0.05 MB CNN,
shipped and aggregated like the weights, never trained), one compose federation
(3 SuperNodes, every node every round, TLS) and:
  round     mean seconds of the steady rounds (2..), from Flower's "[ROUND n/N]" lines
  wire      bytes in and out of the SuperLink container's network interface per steady
            round: every Fleet (SuperNodes) and Runtime (ServerApp) exchange, TLS included
  peak MiB  the most memory each container's cgroup ever used (cgroup v2 memory.peak,
            v1 memory.max_usage_in_bytes: page cache included)

    .venv/bin/python scripts/bench_model_size.py [MiB ...]     (default: 0 1 10 100; images built)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import NODES, ROOT, round_times  # noqa: E402

ROUNDS = 3
SERVICES = ("superlink", "serverapp", "supernode")


def container_reading(container: str, path: str) -> int:
    out = subprocess.run(["docker", "exec", container, "cat", path], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else -1


def wire_bytes(container: str) -> int:
    return sum(container_reading(container, f"/sys/class/net/eth0/statistics/{d}_bytes") for d in ("rx", "tx"))


def peak_memory(container: str) -> int:
    peak = container_reading(container, "/sys/fs/cgroup/memory.peak")  # cgroup v2
    return peak if peak >= 0 else container_reading(container, "/sys/fs/cgroup/memory/memory.max_usage_in_bytes")


def run(extra_mb: float) -> dict:
    project = f"flowerdock-size-{int(extra_mb * 10)}"
    env = {**os.environ, "NUM_SUPERNODES": str(NODES), "NUM_ROUNDS": str(ROUNDS),
           "EXTRA_RUN_CONFIG": f"extra-model-mb={extra_mb:g}", "RUN_DEADLINE": "3000"}
    compose = ["docker", "compose", "-p", project]
    try:
        subprocess.run([*compose, "up", "-d", "--no-build", "--wait", *SERVICES], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=600)

        def ids(service: str) -> list[str]:
            return subprocess.run([*compose, "ps", "-q", service], cwd=ROOT, env=env, capture_output=True,
                                  text=True).stdout.split()

        superlink = ids("superlink")[0]
        before = wire_bytes(superlink)
        started = time.monotonic()
        submit = subprocess.run([*compose, "up", "--no-build", "--exit-code-from", "submit", "submit"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=3600)
        total = time.monotonic() - started
        wire = wire_bytes(superlink) - before
        serverapp_log = subprocess.run(["docker", "logs", ids("serverapp")[0]], capture_output=True,
                                       text=True).stdout.splitlines()
        rounds = round_times(serverapp_log)
        peaks = {service: max(peak_memory(c) for c in ids(service)) / 2**20 for service in SERVICES}
        return {"mb": extra_mb, "ok": submit.returncode == 0, "round": statistics.fmean(rounds[1:] or rounds),
                "wire_per_round": wire / ROUNDS, "total": total, "peaks": peaks}
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "5"], cwd=ROOT, env=env, capture_output=True)


def main() -> None:
    sizes = [float(arg) for arg in sys.argv[1:]] or [0.0, 1.0, 10.0, 100.0]
    results = [run(mb) for mb in sizes]
    print(f"model size: {NODES} SuperNodes, {ROUNDS} rounds, train + evaluate each round, TLS (Docker)")
    print(f"  {'extra MiB':>9}{'run ok':>8}{'round (s)':>11}{'wire/round (MB)':>17}"
          f"{'peak MiB: superlink':>21}{'serverapp':>11}{'supernode':>11}")
    for r in results:
        p = r["peaks"]
        print(f"  {r['mb']:>9g}{str(r['ok']):>8}{r['round']:>11.1f}{r['wire_per_round'] / 1e6:>17.1f}"
              f"{p['superlink']:>21.0f}{p['serverapp']:>11.0f}{p['supernode']:>11.0f}")
    base = results[0]
    for r in results[1:]:
        extra = (r["round"] - base["round"]) / max(r["mb"] - base["mb"], 1e-9)
        print(f"  +{r['mb']:g} MiB: +{extra:.2f} s per extra MiB per round, "
              f"{r['wire_per_round'] / max(r['mb'] * 2**20, 1):.1f}x the model's size on the wire per round")


if __name__ == "__main__":
    main()
