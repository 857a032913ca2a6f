"""Benchmark: time per round of the same Flower simulation in a container
(docker/compose.simulation.yaml) and with `flwr run .` on the host.

Both: SIM_NODES virtual SuperNodes (default 1000), SIM_SAMPLED per round (25),
SIM_ROUNDS rounds (3), one CPU per ClientApp, every round sampling from all nodes.
Round time = time between the starts of consecutive rounds (Flower's `[ROUND n/N]` lines) of the ServerApp
(round 0 is the initial model's evaluation, so round 1 is counted too).
Usage (images built):  .venv/bin/python scripts/bench_simulation.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import ROOT, compose_run, flower_env, print_comparison, round_times  # noqa: E402

NODES = int(os.getenv("SIM_NODES", "1000"))
SAMPLED = int(os.getenv("SIM_SAMPLED", "25"))
ROUNDS = int(os.getenv("SIM_ROUNDS", "3"))
RUN_CONFIG = f"num-server-rounds={ROUNDS} min-nodes={NODES} sampled-nodes={SAMPLED} server-test-set=\"none\""  # scale, not accuracy
FEDERATION_CONFIG = f"num-supernodes={NODES} client-resources-num-cpus=1 init-args-log-to-driver=false"


def in_docker() -> tuple[list[float], float]:
    knobs = {"SIM_NODES": str(NODES), "SIM_SAMPLED": str(SAMPLED), "SIM_ROUNDS": str(ROUNDS)}
    return compose_run("flowerdock-bench-sim", ["docker/compose.simulation.yaml"], knobs, "superlink")


def on_host() -> tuple[list[float], float]:
    bin_dir = Path(sys.executable).parent
    home = Path(tempfile.mkdtemp(prefix="flowerdock-bench-sim-"))
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    env = flower_env(home)
    try:
        start = time.monotonic()
        result = subprocess.run([str(bin_dir / "flwr"), "run", ".", "local-sim", "--stream", "--run-config",
                                 RUN_CONFIG, "--federation-config", FEDERATION_CONFIG],
                                cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=1800)
        return round_times(result.stdout.splitlines()), time.monotonic() - start
    finally:  # `flwr run` leaves its local SuperLink (and Ray) running: stop this one
        subprocess.run(["pkill", "-f", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    host = ("flwr run . (host)", *on_host())
    docker = ("container", *in_docker())
    print_comparison(f"simulation: {NODES} virtual SuperNodes, {SAMPLED} sampled per round, {ROUNDS} rounds",
                     host, docker)
