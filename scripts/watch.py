"""Readable text from a run's JSON lines, for a person at a terminal: one line per round and
phase, the replies that were not ok under it, the server's accuracy, how the run ended.

Containers print JSON Lines, which suit `docker logs` and aggregators; this filter reads that
stream (Compose's `submit-1  | ` prefixes and `run_log` nesting included) on stdin and prints
each readable line as soon as its input arrives. Lines that are not JSON (a process's error, a
traceback, Compose's own words) are printed as they came; other JSON lines are dropped.

Run events count only from the ServerApp: as `submit` relays them (`run_log`), or printed by the
`serverapp` service (scripts/log_provenance.py decides, as for scripts/report.py): a ClientApp
can print any line in a SuperNode's output, and its lines are never shown as rounds.

  docker compose up --no-build --exit-code-from submit submit | python3 scripts/watch.py
  docker compose logs serverapp | python3 scripts/watch.py
  ... | python3 scripts/watch.py --json      # or WATCH=json: every line passed on unchanged

Standard library only: `make` runs it with the system's python3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import BinaryIO, TextIO

from log_provenance import PROVENANCE, SERVERAPP_EVENTS, SERVERAPP_SERVICE, Ignored, Line, lines_of, trusted

SUBMIT_SERVICE = "submit"  # compose.yaml's: relays the run's log as `run_log`, then `run_outcome`
SUBMIT_EVENTS = frozenset({"run_outcome", "run_deadline_exceeded", "run_submit_failed"})
# Lines about one round and phase: the strategy logs them before that phase's round_summary,
# so they wait for it and are printed under it.
ROUND_DETAILS = frozenset({"client_round", "round_skipped", "round_rejected", "node_excluded"})
# Every run event the ServerApp logs is shown but each node's closing record (the report has it).
RUN_EVENTS = SERVERAPP_EVENTS - {"node_record"}
COLOURS = {"ok": "32", "warn": "33", "bad": "31;1", "head": "1"}
ERROR_WIDTH = 120  # a reply's `error` is for a person, but can run to 500 characters


def num(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def kind_of(event: dict) -> str | None:
    kind = event.get("event")
    return kind if isinstance(kind, str) else None  # any JSON can sit there: only a name is an event


def shown(event: dict) -> bool:
    """A run event, or an error of the ServerApp's (Flower's "ServerApp raised an exception", a
    traceback): a person must see why a run failed, not only that it did."""
    return kind_of(event) in RUN_EVENTS or event.get("level") in ("error", "critical")


def short(text: object, width: int = ERROR_WIDTH) -> str:
    first = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return first if len(first) <= width else first[:width - 3] + "..."


class Watcher:
    def __init__(self, out: TextIO, serverapp_service: str = SERVERAPP_SERVICE, colour: bool = False) -> None:
        self.out, self.serverapp_service, self.colour = out, serverapp_service, colour
        self.ignored = Ignored()
        self.rounds: object = None  # num-server-rounds, once run_started says
        self.pending: list[tuple[str, str]] = []  # a phase's details, until its round_summary
        self.seen: set[str] = set()  # the serverapp's line and submit's copy of it, shown once

    def feed(self, text: str) -> None:
        found = list(lines_of([text]))
        if not found:
            if text.strip():
                self.write(text.rstrip("\r\n"))
            return
        event = self.run_event(found[0])
        if isinstance(event, str):  # a line of `flwr log` that was not JSON: the CLI's own words
            self.write(event)
        elif event is not None:
            key = json.dumps({k: v for k, v in event.items() if k not in PROVENANCE}, sort_keys=True, default=str)
            if key not in self.seen:
                self.seen.add(key)
                try:
                    self.show(event)
                except (AttributeError, TypeError, ValueError):  # a field of an odd type: never die mid-run
                    self.write(text.rstrip("\r\n"))

    def run_event(self, line: Line) -> dict | str | None:
        """The ServerApp's (or submit's) event a line carries, if it is one to show."""
        if not trusted(line, self.serverapp_service, self.ignored):
            return None
        event, kind = line.event, kind_of(line.event)
        if line.service in (None, SUBMIT_SERVICE):
            if kind == "run_log":  # `flwr log --stream`: the ServerApp's own output
                inner = line.event.get("line")
                if isinstance(inner, dict):
                    return inner if shown(inner) else None
                return inner if isinstance(inner, str) else None
            if kind in SUBMIT_EVENTS:
                return event
        # Where a prefix names the service, only the ServerApp's (trusted() has already dropped
        # a run event printed by any other).
        if shown(event) and line.service in (None, self.serverapp_service):
            return event
        return None

    def show(self, e: dict) -> None:
        kind = e.get("event")
        if kind in ROUND_DETAILS:
            if not (kind == "client_round" and e.get("status") == "ok"):
                self.pending.append(self.detail(e))
            return
        if kind == "round_summary":
            self.write(*self.summary(e))
            self.flush_pending()
            return
        self.flush_pending()  # a phase that ended without its summary (a failed run)
        if kind == "run_started":
            self.rounds = (e.get("config") or {}).get("num-server-rounds")
        if kind not in RUN_EVENTS | SUBMIT_EVENTS:  # an error line: what it says, and its traceback's last line
            last = str(e.get("exception") or "").strip().splitlines()[-1:]
            self.write(f"error: {short(kind)}" + (f" ({short(last[0])})" if last else ""), "bad")
            return
        self.write(*self.headline(e))

    def label(self, e: dict) -> str:
        total = f"/{self.rounds}" if self.rounds is not None else ""
        width = len(f"round {self.rounds}{total}") if self.rounds is not None else 0
        return f"round {e.get('server_round')}{total}".ljust(width)

    def summary(self, e: dict) -> tuple[str, str]:
        counts = [f"{e.get('ok', 0)} ok"] + [f"{e[s]} {s}" for s in ("rejected", "failed", "missing") if e.get(s)]
        text = f"{self.label(e)} {str(e.get('phase')):<9} {', '.join(counts):<26} {num(e.get('duration_s'), '5.1f')} s"
        return text, "warn" if len(counts) > 1 else ""

    def detail(self, e: dict) -> tuple[str, str]:
        kind = e["event"]
        if kind == "client_round":
            error = f" ({short(e['error'])})" if e.get("error") else ""
            return f"  node {e.get('node_id')} {e.get('status')}: {e.get('reason')}{error}", "warn"
        if kind == "round_skipped":
            hint = f"; {e['hint']}" if e.get("hint") else ""
            return f"  round skipped: {e.get('reason')} ({short(e.get('detail', ''))}){hint}", "warn"
        if kind == "round_rejected":
            furthest = ", ".join(str(f.get("node_id")) for f in e.get("furthest") or [] if isinstance(f, dict))
            return (f"  aggregate rejected by the model guard: accuracy {num(e.get('accuracy_before'), '.3f')} -> "
                    f"{num(e.get('accuracy_after'), '.3f')} (threshold {num(e.get('threshold'), '.3f')}); "
                    f"the previous global model is kept; pulled furthest: {furthest or '-'}", "warn")
        strikes = ", ".join(f"{s.get('server_round')} ({s.get('reason')})" for s in e.get("strikes") or []
                            if isinstance(s, dict))
        return f"  node {e.get('node_id')} excluded for the rest of the run: strikes in rounds {strikes}", "bad"

    def headline(self, e: dict) -> tuple[str, str]:
        kind = e["event"]
        if kind == "run_started":
            config = e.get("config") or {}
            return (f"run {e.get('run_id')} started: {config.get('num-server-rounds', '?')} rounds, strategy "
                    f"{config.get('strategy', '?')}, min-nodes {config.get('min-nodes', '?')}", "head")
        if kind == "global_evaluation":
            initial = " (the initial model)" if e.get("server_round") == 0 else ""
            return f"{self.label(e)} {'accuracy':<9} {num(e.get('accuracy'), '.3f')}{initial}", ""
        if kind == "nodes_waiting":
            return (f"waiting for nodes: {e.get('connected')} of {e.get('wanted')} connected (quorum "
                    f"{e.get('quorum')}), {num(e.get('waited_s'), '.0f')} s of {num(e.get('timeout_s'), '.0f')} s", "")
        if kind == "nodes_ready":
            return f"nodes ready: {e.get('connected')} connected after {num(e.get('waited_s'), '.1f')} s", ""
        if kind == "nodes_wait_ended":
            return (f"stopped waiting for nodes after {num(e.get('waited_s'), '.0f')} s: {e.get('connected')} of "
                    f"{e.get('wanted')} connected, going on with the quorum of {e.get('quorum')}", "warn")
        if kind == "run_failed":
            return f"run failed: {e.get('reason')}", "bad"
        if kind == "model_guard_off":
            return f"model guard off: {short(e.get('reason'))}", "warn"
        if kind == "superlink_pull_failed":
            return (f"the SuperLink failed a pull of replies ({e.get('status')}), {e.get('pending')} awaited: "
                    "tried again", "warn")
        if kind == "run_finished":
            aggregated = e.get("rounds_aggregated")
            of = f", {aggregated} of {self.rounds or '?'} rounds aggregated" if aggregated is not None else ""
            model = (f"; the model: {e['model_path']} in the {self.serverapp_service} container"
                     if e.get("model_path") else "")
            return f"run finished: accuracy {num(e.get('accuracy'), '.3f')}{of}{model}", "head"
        if kind == "run_deadline_exceeded":
            return f"run stopped: past its deadline of {num(e.get('deadline_s'), '.0f')} s (RUN_DEADLINE)", "bad"
        if kind == "run_submit_failed":
            return f"run not submitted: {e.get('error')}", "bad"
        status = e.get("status")  # run_outcome: the SuperLink's word on how the run ended
        return f"run outcome: {status}", "ok" if status == "finished:completed" else "bad"

    def flush_pending(self) -> None:
        for text, tone in self.pending:
            self.write(text, tone)
        self.pending.clear()

    def write(self, text: str, tone: str = "") -> None:
        if self.colour and tone:
            text = f"\x1b[{COLOURS[tone]}m{text}\x1b[0m"
        self.out.write(text + "\n")
        self.out.flush()  # behind a live run: each line when its input came, not when a buffer fills

    def finish(self) -> None:
        self.flush_pending()


def pass_through(source: BinaryIO, sink: BinaryIO) -> None:
    """--json: every line as it came, byte for byte, for a program reading make's output."""
    for raw in iter(source.readline, b""):
        sink.write(raw)
        sink.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="pass every line through unchanged (also: WATCH=json)")
    parser.add_argument("--serverapp-service", default=SERVERAPP_SERVICE,
                        help="the compose service whose run events count, where lines name theirs "
                             "(default: serverapp; superlink for docker/compose.simulation.yaml)")
    parser.add_argument("--logs", metavar="COMMAND", help="named last, for the JSON lines behind the view "
                        "(make passes its compose command's `logs`)")
    args = parser.parse_args(argv)
    # Ctrl-C reaches every process of the pipe: Compose then stops the containers and says so,
    # and this stays to print that, ending when its input does (as `tee -i`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.json or os.environ.get("WATCH", "").strip().lower() == "json":
        pass_through(sys.stdin.buffer, sys.stdout.buffer)
        return 0
    sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    watcher = Watcher(sys.stdout, args.serverapp_service, colour)
    for text in iter(sys.stdin.readline, ""):
        watcher.feed(text)
    watcher.finish()
    if args.logs:
        watcher.write(f"every container's JSON lines: {args.logs}")
    if watcher.ignored.sources:
        print(watcher.ignored.describe(args.serverapp_service), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `watch.py | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
