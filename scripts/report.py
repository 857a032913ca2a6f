"""Report on a run from its JSON lines: per round and per client, training time,
convergence, losses, stragglers, rejected payloads, clipped updates and rejected
rounds; then each node's record (strikes, exclusion); a table in the terminal and,
with --png, a chart.

Reads any mix of: files of JSON Lines (the aggregator's store, a saved log),
`docker compose logs` output (service prefixes and escape codes are skipped), or
stdin. The same line seen twice (a ServerApp's own log and the copy `flwr run
--stream` relays) counts once.

Where lines say where they came from (the aggregator's `service` field, or the
service prefix of `docker compose logs`), run events count only from the
ServerApp's service: a ClientApp can print any line into its own container's
output. The others are left out, and counted on stderr with where they came from.
Lines that say nothing of it (`--no-log-prefix serverapp`) all count.

  docker compose logs --no-log-prefix serverapp | python scripts/report.py
  docker compose logs | python scripts/report.py        # run events from serverapp only
  python scripts/report.py build/logs/flowerdock/*.jsonl --run-id 123 --png report.png
  python scripts/report.py run.jsonl --straggler-factor 2
  docker compose -f docker/compose.simulation.yaml logs | python scripts/report.py --serverapp-service superlink
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

from log_provenance import SERVERAPP_SERVICE, Ignored, lines_of, trusted

STRAGGLER_FACTOR = 1.5  # slower than 1.5x the round's median training time


@dataclass
class Run:
    run_id: str
    clients: dict[tuple[int, str, str], dict] = field(default_factory=dict)  # (round, phase, node)
    summaries: dict[tuple[int, str], dict] = field(default_factory=dict)
    accuracy: dict[int, float] = field(default_factory=dict)
    rejected_rounds: dict[int, dict] = field(default_factory=dict)  # round_rejected, by round
    records: dict[str, dict] = field(default_factory=dict)  # node_record, by node

    @property
    def rounds(self) -> list[int]:
        return sorted({r for r, _ in self.summaries} | {r for r, _, _ in self.clients})


def collect(lines: Iterable[str], serverapp_service: str = SERVERAPP_SERVICE,
            ignored: Ignored | None = None) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    ignored = Ignored() if ignored is None else ignored
    for line in lines_of(lines):
        if not trusted(line, serverapp_service, ignored):
            continue
        e = line.event
        kind, run_id = e.get("event"), e.get("run_id")
        if run_id is None or kind not in ("client_round", "round_summary", "global_evaluation", "round_rejected",
                                          "node_record"):
            continue
        if kind in ("client_round", "round_summary") and not {"server_round", "phase"} <= e.keys():
            continue  # not a line of ours, or a truncated one
        run = runs.setdefault(str(run_id), Run(str(run_id)))
        if kind == "round_rejected" and "server_round" in e:
            run.rejected_rounds.setdefault(e["server_round"], e)
            continue
        if kind == "node_record" and "node_id" in e:
            run.records.setdefault(str(e["node_id"]), e)
            continue
        if kind == "client_round":
            if "node_id" not in e or "status" not in e:
                continue
            run.clients.setdefault((e["server_round"], e["phase"], str(e["node_id"])), e)
        elif kind == "round_summary":
            run.summaries.setdefault((e["server_round"], e["phase"]), e)
        elif e.get("server_round") and e.get("accuracy") is not None:
            run.accuracy[e["server_round"]] = e["accuracy"]
    return runs


def stragglers(run: Run, server_round: int, factor: float) -> set[str]:
    times = {node: e["training_time"] for (r, phase, node), e in run.clients.items()
             if r == server_round and phase == "train" and e["status"] == "ok"}
    if len(times) < 2:
        return set()
    median = statistics.median(times.values())
    return {node for node, t in times.items() if t > factor * median}


def losses(e: dict) -> tuple[float | None, float | None]:
    values = list((e.get("training_losses") or {}).values())
    return (values[0], values[-1]) if values else (None, None)


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def validation(train: dict, evaluate: dict) -> str:
    """The node's accuracy on its validation split: of this round's model (the evaluate phase),
    or, marked `<`, of the round before's (a one-exchange train reply evaluates the model it
    received: its `evaluated_model`)."""
    if (acc := (evaluate.get("metrics") or {}).get("eval_acc")) is not None:
        return fmt(acc, ".3f")
    if "evaluated_model" in train and (acc := (train.get("metrics") or {}).get("eval_acc")) is not None:
        return "<" + fmt(acc, ".3f")
    return "-"


def render(run: Run, factor: float, out: TextIO) -> None:
    nodes = {node for _, _, node in run.clients}
    statuses = [e["status"] for e in run.clients.values()]
    out.write(f"run {run.run_id}: {len(run.rounds)} rounds, {len(nodes)} clients, "
              f"{statuses.count('ok')} ok, {statuses.count('rejected')} rejected, "
              f"{statuses.count('failed')} failed replies\n")
    for server_round in run.rounds:
        slow = stragglers(run, server_round, factor)
        train = run.summaries.get((server_round, "train"), {})
        out.write(f"\nround {server_round}: sampled {train.get('sampled', '-')}, replies {train.get('replies', '-')}, "
                  f"missing {train.get('missing', '-')}, train {fmt(train.get('duration_s'), '.1f')} s, "
                  f"converged {train.get('converged', '-')}, accuracy {fmt(run.accuracy.get(server_round), '.3f')}\n")
        if rejected := run.rejected_rounds.get(server_round):
            out.write(f"  REJECTED: the aggregate scored {fmt(rejected.get('accuracy_after'), '.3f')} against "
                      f"{fmt(rejected.get('accuracy_before'), '.3f')} before; the previous model was kept; pulled "
                      f"furthest: {', '.join(str(f.get('node_id')) for f in rejected.get('furthest', []))}\n")
        out.write(f"  {'node':>20}  {'train':>8}  {'time_s':>7}  {'conv':>4}  {'loss first -> last':>20}  "
                  f"{'evaluate':>8}  {'eval_s':>7}  {'val_acc':>8}  note\n")
        for node in sorted({n for r, _, n in run.clients if r == server_round}):
            t = run.clients.get((server_round, "train", node), {})
            v = run.clients.get((server_round, "evaluate", node), {})
            first, last = losses(t)
            notes = []
            if node in slow:
                notes.append(f"straggler (>{factor}x median)")
            notes += [f"{e['phase']} {e['status']}: {e.get('error', '')}" for e in (t, v)
                      if e and e["status"] != "ok"]
            if clipped := t.get("clipped"):
                notes.append("clipped: " + ", ".join(f"{k} {v}" for k, v in clipped.items()))
            conv = {True: "yes", False: "no"}.get(t.get("converged"), "-")
            out.write(f"  {node:>20}  {t.get('status', '-'):>8}  {fmt(t.get('training_time')):>7}  {conv:>4}  "
                      f"{fmt(first, '.3f') + ' -> ' + fmt(last, '.3f'):>20}  {v.get('status', '-'):>8}  "
                      f"{fmt(v.get('evaluation_time')):>7}  {validation(t, v):>8}  {'; '.join(notes)}\n")


def render_records(run: Run, out: TextIO) -> None:
    """Each node's record over the run (node_record lines): its train replies, strikes, exclusion."""
    if not run.records:
        return
    out.write(f"\nnodes over the run:\n  {'node':>20}  {'ok':>3}  {'rej':>3}  {'fail':>4}  {'miss':>4}  "
              f"{'clip':>4}  strikes (round: reason)\n")
    for node, e in sorted(run.records.items()):
        train = e.get("train") or {}
        strikes = "; ".join(f"{s.get('server_round')}: {s.get('reason')}" for s in e.get("strikes") or [])
        excluded = e.get("excluded_after_round")
        note = f"{strikes}{' -> EXCLUDED after round ' + str(excluded) if excluded is not None else ''}"
        out.write(f"  {node:>20}  {train.get('ok', 0):>3}  {train.get('rejected', 0):>3}  {train.get('failed', 0):>4}  "
                  f"{train.get('missing', 0):>4}  {e.get('clipped', 0):>4}  {note or '-'}\n")


def chart(run: Run, factor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (times_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for server_round in run.rounds:
        slow = stragglers(run, server_round, factor)
        for (r, phase, node), e in run.clients.items():
            if r != server_round or phase != "train":
                continue
            if e["status"] != "ok":
                times_ax.scatter(r, 0, marker="x", color="black", label="rejected/failed")
                continue
            color = "tab:red" if node in slow else "tab:blue"
            times_ax.scatter(r, e["training_time"], color=color, alpha=0.7,
                             label="straggler" if node in slow else "client")
    handles = dict(zip(*reversed(times_ax.get_legend_handles_labels())))
    times_ax.legend(handles.values(), handles.keys())
    times_ax.set(title="Training time per client", xlabel="round", ylabel="seconds")

    per_node: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (r, phase, node), e in sorted(run.clients.items()):
        if phase == "train" and e["status"] == "ok" and losses(e)[1] is not None:
            per_node[node].append((r, losses(e)[1]))
    for points in per_node.values():
        loss_ax.plot(*zip(*points), marker="o", alpha=0.5)
    loss_ax.set(title="Final local training loss per client", xlabel="round", ylabel="loss")
    if run.accuracy:
        acc_ax = loss_ax.twinx()
        acc_ax.plot(*zip(*sorted(run.accuracy.items())), color="black", linewidth=2, label="global accuracy")
        acc_ax.set(ylabel="global accuracy", ylim=(0, 1))
        acc_ax.legend(loc="center right")
    for ax in (times_ax, loss_ax):
        ax.set_xticks(run.rounds)
    fig.suptitle(f"Flower run {run.run_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="JSON Lines files (default: stdin)")
    parser.add_argument("--run-id", help="which run (default: the last one in the input)")
    parser.add_argument("--png", type=Path, help="also save a chart here")
    parser.add_argument("--straggler-factor", type=float, default=STRAGGLER_FACTOR)
    parser.add_argument("--serverapp-service", default=SERVERAPP_SERVICE,
                        help="the compose service whose run events count, where lines name theirs "
                             "(default: serverapp; superlink for docker/compose.simulation.yaml)")
    args = parser.parse_args(argv)

    streams = [p.open(encoding="utf-8", errors="replace") for p in args.files] or [sys.stdin]
    ignored = Ignored()
    runs = collect((line for stream in streams for line in stream), args.serverapp_service, ignored)
    if ignored.sources:
        print(ignored.describe(args.serverapp_service), file=sys.stderr)
    if not runs:
        hint = ""
        if any(service == "superlink" for _, service in ignored.sources):
            hint = " (in docker/compose.simulation.yaml the ServerApp runs in superlink: --serverapp-service superlink)"
        source = f" from the {args.serverapp_service} service" if ignored.sources else ""
        print(f"no client_round or round_summary lines{source} in the input{hint}", file=sys.stderr)
        return 1
    run_id = args.run_id if args.run_id is not None else list(runs)[-1]
    if run_id not in runs:
        print(f"no lines of run {run_id}; runs in the input: {', '.join(map(str, runs))}", file=sys.stderr)
        return 1
    render(runs[run_id], args.straggler_factor, sys.stdout)
    render_records(runs[run_id], sys.stdout)
    if args.png:
        chart(runs[run_id], args.straggler_factor, args.png)
        print(f"\nchart: {args.png}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `report.py ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
