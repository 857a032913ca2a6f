"""Benchmark: how far one SuperLink goes, with N fake SuperNodes through the gateway.

For each N, a fresh federation: the server side of a deployment (docker/compose.server.yaml:
SuperLink, SuperExec, gateway) with its own CA; N node keys registered by its
register-supernodes one-shot; N fake SuperNodes (scripts/fake_fleet: Flower's own Fleet client,
threads in a few processes on this host, no container each) that reach the gateway's published
port over TLS, as sites do. Then:

  idle  IDLE seconds with every node connected, pulling every 3 s as Flower's SuperNode does
  run   one run of this app (a small MLP), ROUNDS rounds of one exchange each and the final
        evaluation, every node asked, min-replies 0.9 N; stopped after DEADLINE seconds

Printed per N: seconds until every node was online; pull latency p50/p99, idle and in the run;
each train round's seconds; replies lost (of N per exchange); the most nodes the SuperLink counted
offline; heartbeats that failed; requests the gateway shed (503, retried by Flower's client);
the SuperLink's 500s (its SQLite lock); the CPU (cores) of the SuperLink, the gateway, the
ServerApp's container and the fake fleet, and the SuperLink's peak memory.

Every node reaches the gateway from this host's one address, so the per-client limits are raised
N times (they exist for one site's address). FLEET_REQUESTS_TOTAL, the gateway's cap on requests
at once from all clients, is the default unless --shed gives values to compare (0: no cap).

    .venv/bin/python scripts/bench_superlink.py [--nodes 50,100,250,500,1000] [--shed 0,32]
        [--plot docs/figures/bench-superlink.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_superlink_plot import plot  # noqa: E402
from bench_superlink_server import Federation, Sampler, cpu_seconds, ended  # noqa: E402
from fake_fleet import FakeFleet, Settings, summarize  # noqa: E402

ROUNDS, IDLE, DEADLINE = 2, 30.0, 600.0
RUN_CONFIG = ('num-server-rounds={rounds} model="mlp" mlp-hidden=8 min-nodes={quorum} expected-nodes={k} '
              'min-replies={quorum} round-timeout=300 node-wait-timeout=120 local-epochs=1 '
              'server-test-set="none"')  # fake updates do not train: no model guard (app/model_guard.py)


def replies(serverapp: list[dict], k: int) -> dict:
    """Per exchange (each train round, the final evaluate): nodes ok; the rest's reasons; round times."""
    asked = [(r, "train") for r in range(1, ROUNDS + 1)] + [(ROUNDS, "evaluate")]
    lines = [e for e in serverapp if e.get("event") == "client_round"]
    ok = {p: {e["node_id"] for e in lines if (e["server_round"], e["phase"]) == p and e["status"] == "ok"}
          for p in asked}
    durations = {(e["server_round"], e["phase"]): e["duration_s"] for e in serverapp if e.get("event") == "round_summary"}
    return {"replies_lost": sum(k - len(ok[p]) for p in asked if p in durations),
            "exchanges_done": sum(p in durations for p in asked),
            "not_ok": dict(Counter(f"{e['status']}:{e.get('reason')}" for e in lines if e["status"] != "ok")),
            "train_round_s": [round(durations[(r, "train")], 1) for r in range(1, ROUNDS + 1) if (r, "train") in durations]}


def why_failed(serverapp: list[dict]) -> str:
    """The ServerApp's own word on a run that failed: its reason, and a quorum it waited for in vain."""
    said = [f"{e['event']}: {e.get('reason') or e.get('error') or ''}".strip() for e in serverapp
            if e.get("event") == "run_failed"]
    said += [f"nodes_wait_ended: {e.get('connected')} of {e.get('wanted')} connected" for e in serverapp
             if e.get("event") == "nodes_wait_ended"]
    return "; ".join(said)[:400]


def one_size(k: int, shed: int | None, idle: float = IDLE, quorum: float = 0.9, deadline: float = DEADLINE,
             online_wait: float = 600.0) -> dict:
    """A fresh federation of K fake nodes, IDLE seconds idle, then one run that goes on with QUORUM x K
    replies (the rest are `missing` after the straggler wait): what was measured."""
    with tempfile.TemporaryDirectory(prefix="fd-bench-superlink-") as folder:
        federation = Federation(k, shed, Path(folder))
        try:
            federation.up()
            started = time.monotonic()
            fleet = FakeFleet(Settings(f"localhost:{federation.fleet_port}", str(federation.certs / "user/ca.crt"),
                                       ramp=min(60.0, k / 10)), federation.keys, min(8, math.ceil(k / 25))).start()
            containers = {s: federation.container(s) for s in ("superlink", "gateway", "serverapp")}
            sampler = Sampler(federation, containers["superlink"])
            try:
                wait_until, online = started + min(120 + k, online_wait), 0
                while online < k and time.monotonic() < wait_until:
                    online = (federation.node_status() or {}).get("online", online)
                    time.sleep(0 if online == k else 3)
                online_s = time.monotonic() - started
                sampler.start()
                marks, cpu = [time.time()], [cpu_seconds(containers, fleet.pids)]
                time.sleep(idle)
                marks.append(time.time()), cpu.append(cpu_seconds(containers, fleet.pids))
                run_config = RUN_CONFIG.format(rounds=ROUNDS, k=k, quorum=math.ceil(quorum * k))
                status, run_s = federation.run(run_config, deadline)
                marks.append(time.time()), cpu.append(cpu_seconds(containers, fleet.pids))
            finally:
                sampler.halt.set()
                records = fleet.stop()
            quiet, busy = summarize(records, marks[0], marks[1]), summarize(records, marks[1], marks[2])
            gone, serverapp = ended(containers), federation.logs("serverapp")
            superlink_500s = sum(e.get("level") == "error" and "database is locked" in str(e.get("event"))
                                 for e in federation.logs("superlink"))
            refused = Counter(f"{e['reason']} {e['status']}" for e in federation.logs("gateway")
                              if e.get("event") == "gateway_refused")  # its local log: a flood rotates it
            http_503 = Counter({kind.split()[0]: n for kind, n in _errors(quiet, busy).items() if kind.endswith(" 503")})
            return {"nodes": k, "shed": shed, "status": status, "online_s": round(online_s, 1), "online": online,
                    "run_s": round(run_s, 1),
                    "idle_pull_p50_p99": [quiet["pull_latency_s_p50"], quiet["pull_latency_s_p99"]],
                    "run_pull_p50_p99": [busy["pull_latency_s_p50"], busy["pull_latency_s_p99"]],
                    **replies(serverapp, k), "run_failed": why_failed(serverapp),
                    "max_offline": sampler.max_offline, "status_unanswered": sampler.unanswered,
                    "heartbeat_failures": quiet["heartbeat_failures"] + busy["heartbeat_failures"],
                    "shed_503": sum(http_503.values()), "http_503_by_path": dict(http_503),
                    "gateway_refused": dict(refused),
                    "superlink_500s": superlink_500s, "node_failures": summarize(records)["node_failures"],
                    **{f"{name}_cores_{phase}": round((cpu[i + 1][name] - cpu[i][name]) / (marks[i + 1] - marks[i]), 2)
                       for name in ("superlink", "gateway", "serverapp", "fleet") for i, phase in ((0, "idle"), (1, "run"))},
                    "superlink_peak_mib": round(sampler.peak_mib), "ended": gone}
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"nodes": k, "shed": shed, "status": f"broke: {str(exc)[-300:]}"}
        finally:
            federation.down()


def _errors(*summaries: dict) -> Counter:
    total: Counter = Counter()
    for summary in summaries:
        total.update(summary["errors_by_kind"])
    return total


def table(results: list[dict]) -> str:
    head = ("N", "cap", "online s", "idle pull p50/p99", "run pull p50/p99", "train rounds s", "lost", "offline",
            "hb fail", "shed 503", "500s", "SuperLink cores idle/run", "MiB", "gateway cores idle/run",
            "ServerApp cores", "fleet cores", "run")
    rows = [head]
    for r in results:
        if "online_s" not in r:
            rows.append((str(r["nodes"]), cap_label(r["shed"]), *[""] * (len(head) - 3), r["status"]))
            continue
        online = str(r["online_s"]) + ("" if r.get("online", r["nodes"]) == r["nodes"] else f" ({r['online']} only)")
        rows.append((str(r["nodes"]), cap_label(r["shed"]), online,
                     "/".join(map(str, r["idle_pull_p50_p99"])), "/".join(map(str, r["run_pull_p50_p99"])),
                     ", ".join(map(str, r["train_round_s"])), str(r["replies_lost"]), str(r["max_offline"]),
                     str(r["heartbeat_failures"]), str(r["shed_503"]), str(r["superlink_500s"]),
                     f"{r['superlink_cores_idle']}/{r['superlink_cores_run']}", str(r["superlink_peak_mib"]),
                     f"{r['gateway_cores_idle']}/{r['gateway_cores_run']}", str(r["serverapp_cores_run"]),
                     f"{r['fleet_cores_idle']}/{r['fleet_cores_run']}",
                     f"{r['status']} in {r['run_s']} s" + "".join(f"; {n} ended: {how}" for n, how in r["ended"].items())
                     + (f"; {r['run_failed']}" if r.get("run_failed") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def cap_label(cap: int | None) -> str:
    return "default" if cap is None else str(cap or "none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="50,100,250,500,1000", help="sizes, separated by commas")
    parser.add_argument("--shed", help="FLEET_REQUESTS_TOTAL values to compare at each size (0: no cap)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the figures here")
    parser.add_argument("--deadline", type=float, default=DEADLINE, help="seconds a run may take before it is stopped")
    parser.add_argument("--online-wait", type=float, default=600.0,
                        help="seconds to wait for every node to be online before going on with those that are")
    args = parser.parse_args()
    caps = [int(c) for c in args.shed.split(",")] if args.shed else [None]
    results = []
    for k in (int(n) for n in args.nodes.split(",")):
        for cap in caps:
            print(f"  measuring {k} fake SuperNodes (cap {cap}) ...", file=sys.stderr, flush=True)
            results.append(one_size(k, cap, deadline=args.deadline, online_wait=args.online_wait))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(f"one SuperLink, N fake SuperNodes (Flower's Fleet client, {os.cpu_count()} cores shared) through the "
          f"gateway (TLS, node keys): {IDLE:.0f} s idle, then {ROUNDS} rounds of one exchange and the final "
          f"evaluation, every node asked, min-replies 0.9 N")
    print(table(results))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
