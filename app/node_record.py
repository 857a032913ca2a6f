"""Memory across rounds: each node's record, and leaving out the ones that keep pulling hard.

A *strike* is a train round in which a node's update was rejected by screening, was
more than twice the bound (app/bounding.py: clipped to under half its size), or pulled
furthest in a round the model guard rejected (app/model_guard.py). An update clipped
by less is no strike: on non-IID data an honest site with unusual data is often a
little past the bound, and must not lose its place for that. A node with `exclude_after` strikes in one run
is left out of sampling, for both phases, for the rest of the run: logged once,
`node_excluded`, with its strikes. A failed or missing reply is no strike: a lost
node is a fault, handled by the quorum, not a sign of dishonesty.

At the end of a run every node asked has one `node_record` line (docs/log-schema.md),
which the run report (scripts/report.py) shows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.round_log import TRAIN, Outcome, log

STRIKE_SCALE = 0.5  # clipped to less than this share of its size: a strike



@dataclass
class NodeRecord:
    statuses: Counter = field(default_factory=Counter)  # train replies: ok | rejected | failed | missing
    clipped: int = 0
    strikes: list[dict] = field(default_factory=list)  # {"server_round", "reason"}
    excluded_after_round: int | None = None


class NodeRecords:
    def __init__(self, run_id: int, exclude_after: int) -> None:
        if exclude_after < 0:
            raise ValueError(f"exclude-after must be 0 (never) or a number of strikes, got {exclude_after}")
        self.run_id, self.exclude_after = run_id, exclude_after
        self.nodes: dict[int, NodeRecord] = {}

    @property
    def excluded(self) -> set[int]:
        return {node for node, record in self.nodes.items() if record.excluded_after_round is not None}

    def note(self, server_round: int, phase: str, outcomes: list[Outcome]) -> None:
        """Count a train round's replies; strike the rejected and the clipped."""
        if phase != TRAIN:
            return
        for outcome in outcomes:
            record = self._record(outcome.node_id)
            record.statuses[outcome.status] += 1
            if outcome.status == "rejected":
                self.strike(outcome.node_id, server_round, outcome.reason)
            elif outcome.clipped:
                record.clipped += 1
                if outcome.clipped.get("distance_scale", 1.0) < STRIKE_SCALE:
                    self.strike(outcome.node_id, server_round, "clipped_hard")

    def strike(self, node_id: int, server_round: int, reason: str) -> None:
        record = self._record(node_id)
        if any(strike["server_round"] == server_round for strike in record.strikes):
            return  # one strike a round at most: clipped, then furthest in the same rejected round, is one
        record.strikes.append({"server_round": server_round, "reason": reason})
        if self.exclude_after and record.excluded_after_round is None and len(record.strikes) >= self.exclude_after:
            record.excluded_after_round = server_round
            log.warning("node_excluded", run_id=self.run_id, node_id=node_id, server_round=server_round,
                        strikes=record.strikes, exclude_after=self.exclude_after,
                        hint="left out of sampling for the rest of this run")

    def log_records(self) -> None:
        for node_id, record in sorted(self.nodes.items()):
            log.info("node_record", run_id=self.run_id, node_id=node_id, train=dict(record.statuses),
                     clipped=record.clipped, strikes=record.strikes,
                     excluded_after_round=record.excluded_after_round)

    def _record(self, node_id: int) -> NodeRecord:
        return self.nodes.setdefault(node_id, NodeRecord())
