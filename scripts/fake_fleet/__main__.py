"""`python -m scripts.fake_fleet keys|run ...`: the command line of the fake SuperNodes (what
they are, and the package's parts: __init__.py)."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from . import __doc__ as OVERVIEW
from .fleet import FakeFleet
from .keys import make_keys
from .settings import Settings
from .summary import summarize


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.fake_fleet", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="make --nodes key pairs in --out")
    keys.add_argument("--nodes", type=int, required=True)
    keys.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("run", help="run fake nodes until --duration or Ctrl-C; print a JSON summary")
    run.add_argument("--superlink", required=True, help="host:port of the Fleet API")
    run.add_argument("--root-certificates", help="CA file for TLS; without it, plain HTTP")
    run.add_argument("--keys", type=Path, help="folder of fake-*.key files (registered); else self-registered")
    run.add_argument("--nodes", type=int, help="how many (default: every key in --keys)")
    run.add_argument("--processes", type=int, default=4)
    run.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C or SIGTERM)")
    run.add_argument("--idle-sleep", type=float, default=3.0)
    run.add_argument("--ramp", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "keys":
        make_keys(args.out, args.nodes)
        return
    chosen = sorted(args.keys.glob("fake-*.key"))[:args.nodes] if args.keys else args.nodes
    if not chosen:
        parser.error("give --keys with fake-*.key files, or --nodes")
    settings = Settings(args.superlink, args.root_certificates, idle_sleep=args.idle_sleep, ramp=args.ramp)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    fleet = FakeFleet(settings, chosen, args.processes).start()
    try:
        done.wait(args.duration or None)
    except KeyboardInterrupt:
        pass
    summary = {"nodes": len(fleet.nodes), "processes": fleet.processes, **summarize(fleet.stop())}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
