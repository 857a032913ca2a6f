"""The JSON summary of a fleet's records (records.py): activations, pull latencies (idle pulls
apart), replies, HTTP requests by path, errors and node failures."""

from __future__ import annotations

import math
from collections import Counter

from .records import KINDS


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(records: dict[str, list[tuple]], since: float = 0.0, until: float = math.inf) -> dict:
    """The JSON summary of records between two wall-clock times."""
    rows = {kind: [r for r in records[kind] if since <= r[0] <= until] for kind in KINDS}
    pulls = rows["pull"]
    idle = [r[2] for r in pulls if not r[3]]
    http_errors = Counter(f"{r[1]} {r[3]}" for r in rows["http"] if r[3] != "ok")
    return {
        "nodes_activated": len({r[1] for r in rows["activate"]}),
        "activation_s_p50": _round(percentile([r[2] for r in rows["activate"]], 50)),
        "pulls": len(pulls), "pulls_with_message": len(pulls) - len(idle),
        **{f"pull_latency_s_p{q}": _round(percentile([r[2] for r in pulls], q)) for q in (50, 95, 99)},
        **{f"idle_pull_latency_s_p{q}": _round(percentile(idle, q)) for q in (50, 95, 99)},
        "pull_latency_s_max": _round(max((r[2] for r in pulls), default=None)),
        "replies_pushed": dict(Counter(r[2] for r in rows["reply"])),
        **{f"reply_s_p{q}": _round(percentile([r[3] for r in rows["reply"]], q)) for q in (50, 99)},
        "http_requests": len(rows["http"]),
        "http_s_p50_p99_by_path": {path: [_round(percentile(times, 50)), _round(percentile(times, 99))]
                                   for path, times in sorted(_by_path(rows["http"]).items())},
        "errors_by_kind": dict(http_errors.most_common()),
        "heartbeat_failures": sum(n for kind, n in http_errors.items() if kind.startswith("send-node-heartbeat")),
        "node_failures": dict(Counter(r[2] for r in rows["failure"])),
        "node_failure_examples": sorted({r[3] for r in rows["failure"] if r[3]})[:5],
    }


def _by_path(http: list[tuple]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for row in http:
        times.setdefault(row[1], []).append(row[2])
    return times


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
