"""Benchmark: what faults and attacks cost. Printed as tables (docs/figures/bench-faults.md).

1. A lost node, in the compose federation (3 SuperNodes, 4 rounds, images built):
   the same run twice, once clean, once with one SuperNode's container killed
   (`docker kill`) after round 1's training. Prints the time from the kill to
   the end of the phase that went on without it, and both runs' wall times.

2. Final accuracy under attack, per aggregator, attack and data layout: 5 clients,
   one attacker (two for `collude`), ROUNDS rounds, the server's test set. The
   attackers (tests/rogue_app/rogue_client.py) send updates that pass screening:
   boosted x10, sign-flipped x10, sign-flipped at the honest size, Gaussian noise,
   trained on flipped labels, a flipped update claiming 100,000 examples, and two
   parties sending one identical update. Each run is the real ServerApp and ClientApp
   in one process (scripts/direct_federation.py: the transport alone is left out), so
   that the whole table takes minutes. "default" is the run config of pyproject.toml;
   every other row is that aggregator with the default defences, and "no defences" rows
   with every defence off (NO_DEFENCES). "without it" is no attack: partition 0's
   ClientApp fails, so its data is missing, the most any defence against its lies can
   keep. A run that ends failed shows its accuracy with "(failed)".

3. What the defences cost: a round's time in the compose federation (3 SuperNodes, runs
   with and without them alternated), and the strategy's time for one round of 100
   replies of this model, with and without them (bounding, guard evaluation, records).

`make bench-faults`; `--no-docker` skips part 1, `--only default,fedavg` picks rows.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import direct_federation  # noqa: E402
from flwr.app import ConfigRecord  # noqa: E402
from app.aggregators import STRATEGIES  # noqa: E402
from tests.test_faults import Federation, summary_of  # noqa: E402

NODES, ROUNDS = 5, int(os.getenv("BENCH_ROUNDS", "3"))  # 3: the rounds `make federation` runs
# The default's row and FedAvg without defences over several seeds (data split, starting
# model, training order); every other row over the first alone, to keep the table minutes long.
SEEDS = [int(seed) for seed in os.getenv("BENCH_SEEDS", "42,7,123").split(",")]
HEADLINE = ("default", "fedavg (no defences)")
BASE = {"num-server-rounds": ROUNDS, "min-nodes": 3, "min-replies": 2, "fraction-train": 1.0,
        "fraction-evaluate": 0.0}
NO_DEFENCES = {"outlier-factor": 0, "min-cosine": -1.0, "clip-factor": 0, "guard-tolerance": 1.0, "exclude-after": 0}
ROWS = {
    "default": {},
    "fedavg (no defences)": {"strategy": "fedavg", **NO_DEFENCES},
    "fedmedian (no defences)": {"strategy": "fedmedian", **NO_DEFENCES},
    "fedtrimmedavg (no defences)": {"strategy": "fedtrimmedavg", **NO_DEFENCES},
    **{name: {"strategy": name} for name in STRATEGIES},
}
ATTACKS = {
    "none": "",
    "without it": "0=absent",  # partition 0's data missing: the most a defence against its lies can keep
    "boost": "0=boost",
    "flip": "0=flip",
    "flip1": "0=flip1",
    "noise": "0=noise",
    "labelflip": "0=labelflip",
    "heavy": "0=heavy",
    "collude x2": "0=collude 1=collude",
}
LAYOUTS = {"iid": {"partitioning": "iid"}, "dirichlet (alpha 0.5)": {"partitioning": "dirichlet", "dirichlet-alpha": 0.5}}


def accuracy_cell(overrides: dict, seeds: list[int]) -> str:
    """The mean final accuracy over `seeds` (lowest-highest), "(failed)" if any of those runs failed."""
    accuracies, failed = [], False
    for seed in seeds:
        events, failure = direct_federation.run({**BASE, **overrides, "seed": seed}, nodes=NODES)
        final = direct_federation.accuracy(events)
        accuracies.append(final if final is not None else 0.0)
        failed |= failure is not None
    spread = f" ({min(accuracies):.2f}-{max(accuracies):.2f})" if len(accuracies) > 1 else ""
    return f"{statistics.fmean(accuracies):.3f}{spread}" + (" (failed)" if failed else "")


def accuracy_tables(rows: dict[str, dict]) -> None:
    print(f"final accuracy after {ROUNDS} rounds, {NODES} clients, digits; one attacker (partition 0), two for "
          f"collude; the rows {', '.join(HEADLINE)}: the mean (lowest-highest) over seeds {SEEDS}, the others "
          f"seed {SEEDS[0]}\n")
    for layout, layout_config in LAYOUTS.items():
        print(f"{layout}:\n")
        print(f"| aggregator | {' | '.join(ATTACKS)} |")
        print(f"|---|{'---|' * len(ATTACKS)}")
        for name, options in rows.items():
            seeds = SEEDS if name in HEADLINE else SEEDS[:1]
            cells = [accuracy_cell({**layout_config, **options, "attacks": attacks}, seeds)
                     for attacks in ATTACKS.values()]
            print(f"| {name} | {' | '.join(cells)} |", flush=True)
        print()


def defence_cost(replies: int = 100, repeats: int = 5) -> None:
    """The strategy's time for one train round of `replies` replies, defences on and off.

    Each reply is the global model (this app's CNN) plus noise, one in ten boosted x10 so
    that bounding has work to do, as a ClientApp's reply would carry it."""
    import numpy as np
    import torch
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from app import task
    from app.aggregators import build_strategy
    from app.metadata import TrainProcessMetadata, to_config_record
    from app.model_guard import ModelGuard, Score

    config = direct_federation.default_run_config()
    test_set = task.load_test_set(config)
    torch.manual_seed(0)
    global_arrays = ArrayRecord(task.build_model(config).state_dict())
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    rng = np.random.default_rng(0)
    meta_name, meta = to_config_record(TrainProcessMetadata(1.0, True, {"epoch_1": 0.5}))

    def score(arrays):
        net = task.build_model(config)
        net.load_state_dict(arrays.to_torch_state_dict())
        metrics, _ = task.evaluate(net, test_set)
        return Score(metrics["eval_loss"], metrics["eval_acc"])

    def reply(node_id: int) -> Message:
        size = 10.0 if node_id % 10 == 0 else 1.0
        arrays = {k: v.numpy() + (size * 0.01 * rng.standard_normal(v.shape)).astype(v.numpy().dtype)
                  for k, v in global_arrays.items()}
        sent = Message(content=RecordDict(), dst_node_id=node_id, message_type="train")
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}), "metrics": MetricRecord(
            {"train_loss": 0.5, "num-examples": 230}), meta_name: meta})
        return Message(content=content, reply_to=sent)

    class Nodes:  # all a strategy's sampling asks of a Grid
        def get_node_ids(self):
            return list(range(1, replies + 1))

    import logging
    for name in ("app", "flwr"):  # the cost of the work, not of printing 100 lines
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"the strategy's time for one train round of {replies} replies (screen, bound, aggregate, guard; "
          f"logging off), median of {repeats}\n")
    print("| | ms per round | ms per reply |\n|---|---|---|")
    for label, options in (("defences off", NO_DEFENCES),
                           ("defences on (default)", {k: config[k] for k in NO_DEFENCES})):
        times = []
        for _ in range(repeats):
            strategy = build_strategy("fedavg", run_id=1, expected_metrics={"train": task.TRAIN_METRICS,
                                      "evaluate": task.EVALUATE_METRICS}, min_available_nodes=1,
                                      min_train_nodes=replies, node_wait_timeout=0,
                                      outlier_factor=float(options["outlier-factor"]),
                                      min_cosine=float(options["min-cosine"]),
                                      clip_factor=float(options["clip-factor"]),
                                      exclude_after=int(options["exclude-after"]),
                                      guard=ModelGuard(1, score, float(options["guard-tolerance"])))
            list(strategy.configure_train(1, global_arrays, ConfigRecord(), Nodes()))
            messages = [reply(node_id) for node_id in range(1, replies + 1)]
            started = time.perf_counter()
            strategy.aggregate_train(1, messages)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"| {label} | {median * 1000:.1f} | {median * 1000 / replies:.2f} |", flush=True)
    print()


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


def defence_round_time(pairs: int = 2) -> None:
    """Round time in the compose federation (3 SuperNodes, TLS), defences off and on, alternated."""
    fed = Federation(nodes=3, min_nodes=2)
    base = "num-server-rounds=3 expected-nodes=3 min-nodes=2 min-replies=2 fraction-train=1.0 fraction-evaluate=1.0"
    off = " ".join(f"{key}={value}" for key, value in NO_DEFENCES.items())
    durations: dict[str, list[float]] = {"defences off": [], "defences on (default)": []}
    try:
        fed.start()
        for _ in range(pairs):
            for label, extra in (("defences off", off), ("defences on (default)", "")):
                run_id = _run_id(fed.submit(f"{base} {extra}").stdout)
                summaries = [e for e in fed.events(run_id) if e["event"] == "round_summary"]
                durations[label] += [sum(e["duration_s"] for e in summaries if e["server_round"] == r)
                                     for r in {e["server_round"] for e in summaries}]
    finally:
        fed.down()
    print(f"a round (train + evaluate) in the compose federation, 3 SuperNodes, {pairs} runs of 3 rounds each, "
          "alternated\n")
    print("| | mean round, s | rounds |\n|---|---|---|")
    for label, values in durations.items():
        print(f"| {label} | {statistics.fmean(values):.2f} | {len(values)} |")
    ratio = statistics.fmean(durations["defences on (default)"]) / statistics.fmean(durations["defences off"])
    print(f"\non / off: {ratio:.3f}\n", flush=True)


def _run_id(output: str) -> str:
    return json.loads([line for line in output.splitlines() if '"run_outcome"' in line][0])["run_id"]


def main() -> None:
    rows = ROWS
    if "--only" in sys.argv:
        wanted = sys.argv[sys.argv.index("--only") + 1].split(",")
        rows = {name: ROWS[name] for name in wanted}
    if "--no-docker" not in sys.argv:
        lost_node()
        defence_round_time()
    defence_cost()
    accuracy_tables(rows)


if __name__ == "__main__":
    main()
