"""What one size of fleet measures: a fresh federation, K fake nodes idle then serving one run;
a sampler of the SuperLink's CPU, memory and offline nodes; the rounds and the SuperLink's errors
read from the logs; and the table of several sizes."""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter

from .federation import Federation, children, cpu_seconds, json_objects, rss_mib

if "." in __package__:  # scripts.local_fleet (python -m scripts.local_fleet): its neighbour package
    from ..fake_fleet import FakeFleet, Settings, make_keys, summarize
else:  # local_fleet, with scripts/ on sys.path (as the benchmarks import their neighbours)
    from fake_fleet import FakeFleet, Settings, make_keys, summarize

# No test set on the server: fake updates do not train the model, so the model guard (and the
# "final model no better than the start" rule) would fail a run that worked (app/model_guard.py).
RUN_CONFIG = ('num-server-rounds={rounds} model="mlp" mlp-hidden=8 min-nodes={k} expected-nodes={k} '
              'min-replies={replies} round-timeout={timeout} local-epochs=1 server-test-set="none"')


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
