"""Benchmark: a federation run under flood, against the same run in quiet, in one go.

The deployment of the tests (tests/deployment.py: server, gateway with every limit and
the allow-list, two SuperNodes that run signed apps only), a quiet 3-round run, then the
same run while tests/flood/attack.py (a container with no key, at an address of its own,
0.5 CPU) keeps 500 connections, slow headers and bodies, a 2 GB body and bursts of
unauthenticated Fleet requests going. Printed: round time quiet and under flood and their
ratio, accuracy, the SuperLink's peak memory, and each kind of refusal the gateway logged.

    .venv/bin/python scripts/bench_gateway.py [--connections 500] [--seconds 75]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.deployment import Deployment  # noqa: E402
from tests.test_gateway import GATEWAY, MiB, MemoryPeak, refusals, run  # noqa: E402


def own_traffic(deployment: Deployment, since: str) -> dict:
    """What the SuperNodes sent through the gateway since then: the traffic the limits must let by."""
    lines = [e for e in deployment.server.logs("gateway") if e["event"] in ("gateway_request", "gateway_refused")
             and e["timestamp"] >= since and e["client"] == deployment.addresses["clients"] and e["port"] == 9092]
    per_second = Counter(e["timestamp"] for e in lines)
    pushes = [int(e["bytes_in"]) for e in lines if e["path"] == "/v1/fleet/push-object"]
    others = [int(e["bytes_in"]) for e in lines if e["path"] != "/v1/fleet/push-object"]
    return {"requests": len(lines), "peak_per_s": max(per_second.values(), default=0),
            "largest_push": max(pushes, default=0), "largest_other": max(others, default=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="500")
    parser.add_argument("--seconds", default="75")
    parser.add_argument("--model-mb", type=float, default=100,
                        help="also a quiet run with this many MiB more model: the traffic the limits must let by")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fd-bench-gateway-") as folder:
        deployment = Deployment(Path(folder))
        try:
            deployment.start()
            [superlink] = deployment.server.containers("superlink")
            with MemoryPeak(superlink) as quiet_memory:
                quiet, quiet_rounds = run(deployment)
            since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            flood = deployment.from_address("partner", "/flood/attack.py", GATEWAY, "9092", "--connections",
                                            args.connections, "--seconds", args.seconds, background=True)
            time.sleep(20)  # past the attacks alone: the flood is on before the run starts
            with MemoryPeak(superlink) as flood_memory:
                attacked, attacked_rounds = run(deployment)
            seen = json.loads(flood.communicate(timeout=600)[0].strip().splitlines()[-1])
            logged = refusals(deployment, since, "partner")
            turned_away = refusals(deployment, since, "clients")
            # Last: a big model leaves the SuperLink's object store and page cache larger.
            big_started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            if args.model_mb:
                run(deployment, f"extra-model-mb={args.model_mb:g}")
            legit = own_traffic(deployment, big_started)
        finally:
            deployment.down()
    quiet_s, flood_s = statistics.mean(quiet_rounds), statistics.mean(attacked_rounds)
    print(f"gateway under flood: 2 SuperNodes, 3 rounds; attacker: {args.connections} connections for "
          f"{args.seconds} s, 0.5 CPU, no key")
    print(f"  round (train + evaluate)   quiet {quiet_s:.1f} s   under flood {flood_s:.1f} s   "
          f"ratio {flood_s / quiet_s:.2f}x (goal <= 1.5)")
    print(f"  accuracy                   quiet {quiet['accuracy']:.3f}   under flood {attacked['accuracy']:.3f}")
    print(f"  SuperLink peak memory      quiet {quiet_memory.peak / MiB:.0f} MiB   under flood "
          f"{flood_memory.peak / MiB:.0f} MiB")
    big = seen["big_body"]
    print(f"  2 GB body, declared        {big['declared']['status']} after {big['declared']['seconds']} s")
    print(f"  2 GB body, chunked         {big['chunked']['status']} after {big['chunked']['bytes_sent'] / MiB:.0f} MiB "
          f"({big['chunked']['seconds']} s)")
    burst = seen["burst"]
    sent = sum(burst.values())
    print(f"  unauthenticated burst      {sent} requests: {burst.get('503', 0)} refused by the rate limit (503), "
          f"{sum(v for k, v in burst.items() if k.startswith('4'))} by the SuperLink (4xx)")
    for name in ("connections", "slow_header", "slow_body"):
        print(f"  {name:<26} {seen[name]}")
    print("  refusals logged by the gateway (status, reason: count):")
    for (status, reason), count in sorted(logged.items()):
        print(f"    {status} {reason:<22} {count}")
    print(f"  refusals of the SuperNodes' own address: {sum(turned_away.values())}")
    if args.model_mb:
        print(f"  the SuperNodes' own traffic with {args.model_mb:g} MiB more model (2 nodes, one address): "
              f"at most {legit['peak_per_s']} requests in a second, {legit['requests']} in all; largest body "
              f"{legit['largest_push'] / MiB:.2f} MiB (push-object), {legit['largest_other'] / 1024:.1f} KiB "
              "(any other Fleet request)")


if __name__ == "__main__":
    main()
