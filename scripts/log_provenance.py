"""Where a run's log line came from, for scripts/report.py: the ServerApp's run events count
only from the ServerApp's service, where the input says which service printed a line.

A ClientApp can print any JSON it likes into its own container's output, `client_round` lines
included. What names a line's source is never the line itself: it is Compose's prefix in
`docker compose logs` ("supernode-2  | ..."), or the fields the aggregator sets from the
engine's tag (`service`, `container`, `container_id`: docker/aggregator/rsyslog.conf).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

SERVERAPP_SERVICE = "serverapp"  # compose.yaml's; the simulation's ServerApp runs in `superlink`
# Events the ServerApp alone emits (app/server_app.py, app/round_log.py, app/quorum.py). The
# aggregator trusts them from its service alone too (docker/aggregator/rsyslog.conf): keep in step.
SERVERAPP_EVENTS = frozenset({
    "client_round", "round_summary", "round_skipped", "global_evaluation", "run_started",
    "run_finished", "run_failed", "nodes_waiting", "nodes_ready", "nodes_wait_ended",
    "superlink_pull_failed", "round_rejected", "model_guard_off", "node_excluded", "node_record",
    "checkpoint_saved", "initial_model_loaded",
})
UNTRUSTED = "untrusted_run_event"  # the aggregator's note of a run event it kept out of runs/
PROVENANCE = ("container", "container_id", "service")  # the aggregator's fields
_ESCAPES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"  # ESC[2K (Compose 2.25-2.26), colours
# `docker compose logs`: "<container>  | <line>", the container named without its project.
COMPOSE_PREFIX = re.compile(rf"{_ESCAPES}(?P<container>[A-Za-z0-9][\w.-]*)\s+\|{_ESCAPES} ?")


@dataclass(frozen=True)
class Line:
    """One JSON object of the input, and where it came from when the input says so."""

    event: dict
    service: str | None = None  # None: the line does not say (plain JSON Lines)
    container: str | None = None
    compose_prefix: bool = False  # `docker compose logs` named it, not the aggregator


def lines_of(texts: Iterable[str]) -> Iterable[Line]:
    """The JSON objects in lines that may carry a prefix (`serverapp-1  | `, ESC[2K). Where a
    line came from is the prefix's (Compose's), else the aggregator's fields, never a field a
    line printed in a prefixed log carries."""
    for text in texts:
        prefix = COMPOSE_PREFIX.match(text)
        body = text[prefix.end():] if prefix else text
        start = body.find("{")
        if start < 0:
            continue
        try:
            event = json.loads(body[start:])
        except (ValueError, RecursionError):  # RecursionError: JSON nested past the parser's depth
            continue
        if not isinstance(event, dict):
            continue
        if prefix:  # "supernode-2": the service is the container's name less its replica number
            container = prefix["container"]
            yield Line(event, re.sub(r"-\d+$", "", container), container, compose_prefix=True)
        elif isinstance(event.get("service"), str):  # stored by the aggregator
            yield Line(event, event["service"], str(event.get("container")))
        else:
            yield Line(event)


@dataclass
class Ignored:
    """Run events left out: not from the ServerApp's service. Each counted once, by where it came from."""

    seen: set[str] = field(default_factory=set)
    sources: Counter = field(default_factory=Counter)  # (container, service) -> lines

    def add(self, line: dict, service: str | None, container: str | None) -> None:
        printed = {k: v for k, v in line.items() if k not in PROVENANCE} if isinstance(line, dict) else line
        key = json.dumps(printed, sort_keys=True, default=str)
        # The same forged line, seen again: in its container's file and as the aggregator's note,
        # or in `docker compose logs` under Compose's short name and the aggregator's full one.
        if key not in self.seen:
            self.seen.add(key)
            self.sources[(str(container), str(service))] += 1

    def describe(self, serverapp_service: str) -> str:
        where = ", ".join(f"{n} from {container} ({service or 'no service'})"
                          for (container, service), n in self.sources.most_common())
        return (f"ignored {sum(self.sources.values())} run events not from the {serverapp_service} "
                f"service (any container can print any line; only the ServerApp's count): {where}")


def trusted(line: Line, serverapp_service: str, ignored: Ignored) -> bool:
    """Whether a line counts; a run event from another service, or the aggregator's note of one,
    is counted in `ignored` instead."""
    e, kind = line.event, line.event.get("event")
    if kind == UNTRUSTED and (not line.compose_prefix or line.service == "aggregator"):
        ignored.add(e.get("line"), e.get("service"), e.get("container"))  # the aggregator's note
        return False
    if (kind == UNTRUSTED or (isinstance(kind, str) and kind in SERVERAPP_EVENTS)) \
            and line.service is not None and line.service != serverapp_service:
        ignored.add(e, line.service, line.container)
        return False
    return True
