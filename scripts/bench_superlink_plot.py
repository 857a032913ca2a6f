"""The PNG of `make bench-superlink`: what one SuperLink does as the fleet grows."""

from __future__ import annotations

from pathlib import Path


def plot(results: list[dict], path: Path) -> None:
    """Left: the mean train round and the idle pull p99, in seconds. Right: what was lost on the way
    (replies, nodes counted offline) and what the gateway shed. One line per gateway cap compared."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    fig, (times, losses) = plt.subplots(1, 2, figsize=(11, 6.2))
    for cap in sorted({r["shed"] for r in results}, key=lambda c: -1 if c is None else c):
        rows = sorted((r for r in results if r["shed"] == cap and "online_s" in r), key=lambda r: r["nodes"])
        if not rows:
            continue
        label = " (default cap)" if cap is None else (" (no cap)" if cap == 0 else f" (cap {cap})")
        nodes = [r["nodes"] for r in rows]
        rounds = [sum(r["train_round_s"]) / len(r["train_round_s"]) if r["train_round_s"] else None for r in rows]
        times.plot(nodes, rounds, marker="o", label="train round, mean" + label)
        unfinished = [(r["nodes"], r["run_s"]) for r in rows if not r["train_round_s"]]
        if unfinished:  # no round ended before the run was stopped: at least this long
            times.scatter(*zip(*unfinished), marker="^", s=60, label="no round done in (s)" + label)
        times.plot(nodes, [r["idle_pull_p50_p99"][1] for r in rows], marker="s", linestyle="--",
                   label="idle pull p99" + label)
        losses.plot(nodes, [r["replies_lost"] for r in rows], marker="o", label="replies lost" + label)
        losses.plot(nodes, [r["max_offline"] for r in rows], marker="^", label="nodes offline (most)" + label)
        losses.plot(nodes, [r["shed_503"] / 100 for r in rows], marker="s", linestyle=":",
                    label="requests shed / 100" + label)
    for axis, title, unit in ((times, "Time", "seconds"), (losses, "Losses and shedding", "count")):
        axis.set_xscale("log")
        axis.set_xlabel("fake SuperNodes (N)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.14), ncol=2)  # below: the points stay visible
    times.set_yscale("log")
    fig.suptitle("One SuperLink through the gateway, 2 cores (make bench-superlink)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
