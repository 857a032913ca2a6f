"""Benchmark: what faults cost. Two parts, both printed as tables (docs/figures/bench-faults.md).

1. A lost node, in the compose federation (3 SuperNodes, 4 rounds, images built):
   the same run twice, once clean, once with one SuperNode's container killed
   (`docker kill`) after round 1's training. Prints the time from the kill to
   the end of the phase that went on without it, and both runs' wall times.

2. Final accuracy with 0, 1 and 2 lying clients of 5, per aggregator.

The liars (tests/rogue_app/rogue_client.py) send, every round, an update that
passes screening (finite, the right shapes): `scale` multiplies the honest update
by 1e6, `noise` replaces it with Gaussian noise of the honest weights' mean and
spread. Each configuration runs in Flower's simulation runtime on this machine
(5 virtual SuperNodes, every one in every round, the same seed), so the strategy,
its screening and Flower's aggregators are the real ones; only the transport is
Flower's in-process one. `make bench-faults`; docs/fault-model.md's table
quotes its output. A run that ends failed (no round aggregated) shows as "failed".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_federation import flower_env  # noqa: E402
from tests import rogue_app  # noqa: E402
from tests.test_faults import Federation, summary_of  # noqa: E402

NODES, ROUNDS = 5, int(os.getenv("BENCH_ROUNDS", "3"))
BASE = (f"num-server-rounds={ROUNDS} min-nodes={NODES} min-replies=1 fraction-train=1.0 fraction-evaluate=1.0 "
        "num-malicious=2 trimmed-beta=0.4")
CONFIGS = {
    "FedAvg": "strategy=\"fedavg\"",
    "FedAvg + outlier rule (k=3)": "strategy=\"fedavg\" outlier-factor=3",
    "FedMedian": "strategy=\"fedmedian\"",
    "FedTrimmedAvg (beta=0.4)": "strategy=\"fedtrimmedavg\"",
    "MultiKrum (f=2, m=2)": "strategy=\"multikrum\"",
}
ATTACKS = ("scale", "noise")


def simulate(app_dir: Path, run_config: str) -> tuple[float | None, float]:
    """(final accuracy or None if the run failed, seconds) of one simulated run."""
    bin_dir = Path(sys.executable).parent
    home = Path(tempfile.mkdtemp(prefix="flowerdock-bench-faults-"))
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    env = flower_env(home)
    started = time.monotonic()
    try:
        result = subprocess.run([str(bin_dir / "flwr"), "run", str(app_dir), "local-sim", "--stream",
                                 "--run-config", run_config, "--federation-config",
                                 f"num-supernodes={NODES} client-resources-num-cpus=1 init-args-log-to-driver=false"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:  # `flwr run` leaves its local SuperLink (and Ray) running: stop this one
        subprocess.run(["pkill", "-f", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)
    accuracy = None
    for line in result.stdout.splitlines():
        if '"run_finished"' in line:
            accuracy = json.loads(line[line.index("{"):]).get("accuracy")
    return accuracy, time.monotonic() - started


def lost_node() -> None:
    fed = Federation(nodes=3, min_nodes=2)
    run_config = ("num-server-rounds=4 expected-nodes=3 min-nodes=2 min-replies=2 "
                  "fraction-train=1.0 fraction-evaluate=1.0")
    try:
        fed.start()
        started = time.monotonic()
        clean = fed.submit(run_config)
        clean_s = time.monotonic() - started
        started = time.monotonic()
        run = fed.submit(run_config, background=True)
        fed.wait_for(lambda e: summary_of(1, "train")(e) and e["run_id"] != _run_id(clean.stdout))
        killed = time.monotonic()
        subprocess.run(["docker", "kill", fed.container(3)], check=True, capture_output=True)
        fed.wait_for(lambda e: summary_of(1, "evaluate")(e) and e["run_id"] != _run_id(clean.stdout))
        detected_s = time.monotonic() - killed
        run.communicate(timeout=900)
        lost_s = time.monotonic() - started
    finally:
        fed.down()
    print("a lost node: 3 SuperNodes, 4 rounds, one killed after round 1's training\n")
    print("| | seconds |\n|---|---|")
    print(f"| run, no node lost | {clean_s:.0f} |")
    print(f"| run, one node lost (exit {run.returncode}) | {lost_s:.0f} |")
    print(f"| kill -> the phase went on without it | {detected_s:.1f} |\n")


def _run_id(output: str) -> str:
    return json.loads([line for line in output.splitlines() if '"run_outcome"' in line][0])["run_id"]


def main() -> None:
    if "--no-docker" not in sys.argv:
        lost_node()
    app_dir = rogue_app.assemble(Path(tempfile.mkdtemp(prefix="flowerdock-rogue-app-")) / "app")
    columns = ["0 liars"] + [f"{n} x {attack}" for attack in ATTACKS for n in (1, 2)]
    print(f"final accuracy after {ROUNDS} rounds, {NODES} clients, digits (seed 42)\n")
    print(f"| aggregator | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    for name, options in CONFIGS.items():
        cells = []
        for column in columns:
            attacks = ""
            if column != "0 liars":
                count, _, attack = column.partition(" x ")
                attacks = " ".join(f"{p}={attack}" for p in range(int(count)))
            accuracy, _ = simulate(app_dir, f'{BASE} {options} attacks="{attacks}"')
            cells.append("failed" if accuracy is None else f"{accuracy:.3f}")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
