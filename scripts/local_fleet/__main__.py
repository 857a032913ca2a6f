"""`python -m scripts.local_fleet check|measure ...`: the command line of the local fleet check
(what it does, and the package's parts: __init__.py)."""

from __future__ import annotations

import argparse
import json
import sys

from . import __doc__ as OVERVIEW
from .measure import one_size, table


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.local_fleet", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["check", "measure"])
    parser.add_argument("--nodes", default="10", help="K, or sizes separated by commas (measure)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle pulls measured before the run")
    parser.add_argument("--processes", type=int, default=0, help="fake-node processes (0: one per 25 nodes, <= 8)")
    parser.add_argument("--quorum", type=float, help="min-replies as a share of K (check: 1; measure: 0.9, so "
                                                     "that a lost reply costs a straggler wait, not a round-timeout)")
    parser.add_argument("--round-timeout", type=int, default=300)
    parser.add_argument("--deadline", type=int, default=1800, help="seconds a run may take; then it is stopped")
    args = parser.parse_args()
    args.quorum = args.quorum or (1.0 if args.mode == "check" else 0.9)
    results = []
    for k in (int(n) for n in args.nodes.split(",")):
        results.append(one_size(k, args))
        print(json.dumps(results[-1]), flush=True)
    print(table(results), file=sys.stderr)
    return 0 if all(r["outcome"] == "finished:completed" and r["every_node_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
