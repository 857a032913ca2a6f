"""Benchmark: where a round's time goes, in Docker and as plain processes, in one run.

Four federations on this machine, one after the other, each 3 SuperNodes, every
node in every round, TLS and node authentication:
  1. flowerdock in Docker (compose.yaml; the warm ClientApp launcher), one exchange a
     round (run config one-exchange=true: the train reply carries the evaluation);
  2. the same, two exchanges a round (train, then evaluate: one-exchange=false);
  3. the same app as plain processes (Flower's own flwr-clientapp: a cold start per message),
     two exchanges;
  4. Flower's floor: a trivial numpy app (scripts/bench_apps/trivial) as plain processes
     (train, then evaluate: two exchanges).
Round time: between the starts of consecutive rounds (Flower's "[ROUND n/N]"),
steady rounds only (round 1 pays first-time costs). For (1) and (2), each phase
(train, evaluate) is split into the steps of one message, from the JSON logs,
averaged over nodes and steady rounds:
  queued -> pulled      the SuperNode pulls the message (Flower polls every 3 s when idle)
  pulled -> started     the ClientApp process is up (SuperExec poll, process start, imports)
  started -> done       the ClientApp's own work (local_train_done / local_evaluate_done)
  done -> sent          the reply is pushed to the SuperLink
  sent -> aggregated    the ServerApp pulls it, waits for the others, aggregates (round_summary)

    .venv/bin/python scripts/bench_round.py       (make bench-round; images built)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import NODES, ROOT, as_processes, events, in_docker  # noqa: E402

ROUNDS = 4
STEPS = ("queued->pulled", "pulled->started", "started->done", "done->sent", "sent->aggregated")
DONE = {"train": "local_train_done", "evaluate": "local_evaluate_done"}


def first_after(lines: list[dict], t: float, test) -> dict | None:
    return next((e for e in lines if e["t"] >= t and test(str(e.get("event", "")))), None)


def phase_steps(logs: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Mean seconds per step, per phase, over nodes and steady rounds."""
    parsed = {name: events(lines) for name, lines in logs.items()}
    summaries = [e for lines in parsed.values() for e in lines if e.get("event") == "round_summary"]
    nodes = [lines for lines in parsed.values() if any("Receiving:" in str(e.get("event")) for e in lines)]
    steps: dict[str, dict[str, list[float]]] = {}
    for summary in summaries:
        if summary["server_round"] < 2:
            continue
        phase, end = summary["phase"], summary["t"]
        start = end - summary["duration_s"]
        for lines in nodes:
            pulled = first_after(lines, start, lambda text: text.startswith(f"Receiving: {phase} message"))
            if pulled is None or pulled["t"] > end:
                continue
            started = first_after(lines, pulled["t"], lambda text: text.startswith("Start `flwr-clientapp`"))
            done = first_after(lines, pulled["t"], lambda text: text == DONE[phase])
            sent = done and first_after(lines, done["t"], lambda text: text == "Sent successfully")
            if not (started and done and sent) or sent["t"] > end:
                continue
            marks = (start, pulled["t"], started["t"], done["t"], sent["t"], end)
            for step, a, b in zip(STEPS, marks, marks[1:]):
                steps.setdefault(phase, {}).setdefault(step, []).append(b - a)
    return {phase: {step: statistics.fmean(values) for step, values in by_step.items()}
            for phase, by_step in steps.items()}


def print_steps(name: str, steps: dict[str, dict[str, float]]) -> None:
    for phase in ("train", "evaluate"):
        if phase in steps:
            cells = "  ".join(f"{step} {steps[phase].get(step, float('nan')):5.2f}" for step in STEPS)
            print(f"    {name:<22}{phase:<9}{cells}")


def steady(rounds: list[float]) -> list[float]:
    return rounds[1:] if len(rounds) > 1 else rounds


def main() -> None:
    runs = []
    docker_logs: dict[str, list[str]] = {}
    rounds, total = in_docker(docker_logs, rounds=ROUNDS, run_config="one-exchange=true")
    runs.append(("docker, 1 exchange", rounds, total, phase_steps(docker_logs)))
    docker_logs = {}
    rounds, total = in_docker(docker_logs, rounds=ROUNDS, run_config="one-exchange=false")
    runs.append(("docker, 2 exchanges", rounds, total, phase_steps(docker_logs)))
    plain_logs: dict[str, list[str]] = {}
    config = (f"num-server-rounds={ROUNDS} min-nodes={NODES} fraction-train=1.0 fraction-evaluate=1.0 "
              "one-exchange=false")
    rounds, total = as_processes(ROOT, config, plain_logs)
    runs.append(("plain processes", rounds, total, phase_steps(plain_logs)))
    rounds, total = as_processes(ROOT / "scripts" / "bench_apps" / "trivial", f"num-server-rounds={ROUNDS}")
    runs.append(("flower floor", rounds, total, {}))

    print(f"round time: {NODES} SuperNodes, {ROUNDS} rounds (steady = rounds 2..), train + evaluate, TLS")
    print(f"  {'':<20}{'steady round (s)':>17}  {'every round (s)':<34}{'run total (s)':>14}")
    for name, rounds, total, _ in runs:
        listed = str([round(r, 1) for r in rounds])
        print(f"  {name:<20}{statistics.fmean(steady(rounds)):>17.2f}  {listed:<34}{total:>14.1f}")
    one, two, plain, floor = (statistics.fmean(steady(run[1])) for run in runs)
    print(f"  docker, 1 exchange / flower floor (trivial app, plain, 2 exchanges): {one / floor:.2f}x")
    print(f"  docker, 2 exchanges / flower floor: {two / floor:.2f}x")
    print(f"  docker, 1 exchange / 2 exchanges: {one / two:.2f}x")
    print(f"  docker / plain processes, same app, 2 exchanges: {two / plain:.2f}x")
    print("  where a message's time goes (s, mean over nodes and steady rounds):")
    for name, _, _, steps in runs[:3]:
        print_steps(name, steps)


if __name__ == "__main__":
    main()
