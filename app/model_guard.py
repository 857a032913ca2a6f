"""The model-health guard: an aggregate that makes the global model markedly worse is not adopted.

Where the server holds a test set, every train round's aggregate is evaluated on it
before it replaces the global model. If its accuracy is more than `tolerance` below
the accuracy of the model adopted last (the starting model, at first), the round is
rejected: `round_rejected` says both figures and the threshold, names the updates
that pulled furthest, and the previous model is kept. The next round starts from it.

Without a server test set (run config server-test-set="none") there is nothing to
judge by: the guard is off, and says so once at the start of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ArrayRecord

from app.round_log import Outcome, log

FURTHEST_NAMED = 2  # updates named in a round_rejected line


@dataclass(frozen=True)
class Score:
    loss: float
    accuracy: float


class ModelGuard:
    """Judges each round's aggregate against the model adopted last."""

    def __init__(self, run_id: int, evaluate: Callable[[ArrayRecord], Score] | None, tolerance: float) -> None:
        if not 0 <= tolerance <= 1:
            raise ValueError(f"guard-tolerance must be an accuracy drop in [0, 1] (1: off), got {tolerance:g}")
        self.run_id, self.evaluate, self.tolerance = run_id, evaluate, tolerance
        self.adopted: Score | None = None
        self.rounds_rejected = 0
        self._scored: list[tuple[ArrayRecord, Score]] = []  # the last models scored: each round's is asked twice

    def score(self, arrays: ArrayRecord) -> Score:
        """The test-set score of `arrays`, evaluated once: the guard judges a round's aggregate,
        then the ServerApp's per-round evaluation asks for the same model (or the one kept)."""
        for known, score in self._scored:
            if known is arrays:
                return score
        score = self.evaluate(arrays)
        self._scored = [*self._scored[-1:], (arrays, score)]
        return score

    @property
    def on(self) -> bool:
        return self.evaluate is not None and self.tolerance < 1

    def announce(self) -> None:
        if self.evaluate is None:
            log.warning("model_guard_off", run_id=self.run_id,
                        reason="the server has no test set (server-test-set=none): no aggregate is judged "
                               "before it is adopted, and the run's outcome cannot compare models",
                        hint="bounding (clip-factor) and a robust strategy still apply")
        elif self.tolerance >= 1:
            log.warning("model_guard_off", run_id=self.run_id, reason="guard-tolerance=1")

    def admits(self, server_round: int, candidate: ArrayRecord, current: ArrayRecord,
               outcomes: list[Outcome]) -> bool:
        """True to adopt `candidate`; False (logged, the round counted) to keep `current`."""
        if not self.on:
            return True
        if self.adopted is None:
            self.adopted = self.score(current)
        score = self.score(candidate)
        threshold = self.adopted.accuracy - self.tolerance
        if score.accuracy >= threshold:
            self.adopted = score
            return True
        self.rounds_rejected += 1
        log.warning("round_rejected", run_id=self.run_id, server_round=server_round,
                    accuracy_before=self.adopted.accuracy, accuracy_after=score.accuracy,
                    loss_before=self.adopted.loss, loss_after=score.loss, threshold=threshold,
                    tolerance=self.tolerance, furthest=[{"node_id": str(o.node_id), "update_distance": distance}
                                                        for o, distance in furthest(outcomes)],
                    hint="the previous global model is kept")
        return False


def furthest(outcomes: list[Outcome], count: int = FURTHEST_NAMED) -> list[tuple[Outcome, float]]:
    """The accepted updates that moved the model most, as sent (before any clipping), furthest first."""
    moved = [(o, o.screened.update_distance) for o in outcomes if o.status == "ok"]
    return sorted(moved, key=lambda pair: pair[1], reverse=True)[:count]
