"""The strategy layer: every reply screened and logged, then aggregated by Flower.

`ScreenedStrategy` wraps any Flower strategy (app/aggregators.py: FedAvg, FedAdagrad,
and the robust FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan). Per round and phase:

  configure  wait, bounded, for a quorum of connected nodes (app/quorum.py), leave
             out the nodes excluded for their record (app/node_record.py), then
             let the base strategy sample among the rest; each train message
             carries its node's typed instruction (app/instructions.py);
  screen     judge every reply alone (app/screening.py), then each update against
             its round's others: far from the median distance, or pointing away
             from them (app/round_screening.py); bound what is left in distance
             and weight (app/bounding.py);
  log        one `client_round` line per node asked (app/round_log.py);
  aggregate  the accepted replies only. Fewer than `min_replies` accepted train
             replies, an aggregator that declines, or an exception in screening or
             aggregation: `round_skipped`, and the previous global model stays.
             A non-finite aggregate raises `RunFailed`: a run never completes
             with a broken model.
  guard      an aggregate that makes the model markedly worse on the server's test
             set is not adopted (app/model_guard.py): `round_rejected`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from app.bounding import UpdateBound
from app.instructions import Pacer, baseline
from app.model_guard import ModelGuard, furthest
from app.node_record import NodeRecords
from app.quorum import RunFailed, wait_for_nodes
from app.round_screening import reject_far, reject_opposed
from app.round_log import EVALUATE, TRAIN, Outcome, log_client_round, log_round_skipped, log_round_summary
from app.run_config import default, defaults
from app.screening import Rejected, bounded, decode_global, screen_evaluate, screen_train


class ScreenedStrategy:
    """Mixin for a Flower strategy: bounded waits, screening, one line per reply.

    Each setting's default is the run config's (app/run_config.py), for a strategy built
    without one; the ServerApp passes them all (server_app.strategy_from)."""

    def __init__(
        self,
        *,
        run_id: int,
        expected_metrics: dict[str, tuple[str, ...]],
        expected_nodes: int = default("expected-nodes"),
        node_wait_timeout: float = default("node-wait-timeout"),
        min_replies: int = default("min-replies"),
        max_examples: int = default("max-examples"),
        outlier_factor: float = default("outlier-factor"),
        min_cosine: float = default("min-cosine"),
        clip_factor: float = default("clip-factor"),
        exclude_after: int = default("exclude-after"),
        guard: ModelGuard | None = None,
        one_exchange: bool = default("one-exchange"),
        pacer: Pacer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.expected_metrics = expected_metrics
        self.expected_nodes = expected_nodes  # the first round waits for these; later ones for a quorum
        self.node_wait_timeout = node_wait_timeout
        self.min_replies = min_replies
        self.max_examples = max_examples
        self.outlier_factor, self.min_cosine = outlier_factor, min_cosine
        self.bound = UpdateBound(clip_factor, self.weighted_by_key)
        self.records = NodeRecords(run_id, exclude_after)
        self.guard = guard or ModelGuard(run_id, None, 1.0)
        # One exchange a round (run config one-exchange): the train replies carry the received
        # model's evaluation, and the evaluate phase asks nobody before the last round.
        self.one_exchange = one_exchange
        self.pacer = pacer or Pacer(baseline(defaults()))
        self._num_rounds = 0
        self.rounds_aggregated = 0
        self._global: dict[str, np.ndarray] = {}
        self._current: ArrayRecord | None = None  # the global model this round started from
        self._started: dict[str, float] = {}
        self._sampled: dict[str, int] = {}

    def start(self, *, num_rounds: int = 3, **kwargs: Any):
        self._num_rounds = num_rounds  # the last round, for one_exchange's evaluate phase
        return super().start(num_rounds=num_rounds, **kwargs)

    # --- configure: wait for a quorum, then sample among the connected nodes --------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global, self._current = decode_global(arrays), arrays
        connected = self._connected_nodes(grid, first=server_round == 1)
        messages = super().configure_train(server_round, arrays, config, connected)
        return self._remember(TRAIN, self.pacer.attach(server_round, messages))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.one_exchange and server_round < self._num_rounds:
            return self._remember(EVALUATE, [])
        connected = self._connected_nodes(grid, first=False)
        return self._remember(EVALUATE, super().configure_evaluate(server_round, arrays, config, connected))

    def _connected_nodes(self, grid: Grid, first: bool) -> _Connected:
        quorum = self.min_available_nodes
        wanted = max(self.expected_nodes, quorum) if first else quorum
        nodes = wait_for_nodes(grid, wanted=wanted, quorum=quorum, run_id=self.run_id,
                               timeout=self.node_wait_timeout)
        if excluded := self.records.excluded & set(nodes):
            nodes = [node for node in nodes if node not in excluded]
            if len(nodes) < quorum:
                raise RunFailed(f"{len(excluded)} node(s) excluded for their record (node_excluded lines) "
                                f"leave {len(nodes)} connected, fewer than the quorum of {quorum} (min-nodes)")
        # The base strategy samples from this snapshot, so Flower's unbounded wait in
        # `sample_nodes` always finds its minimum there.
        return _Connected(grid, nodes)

    def _remember(self, phase: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self._sampled[phase], self._started[phase] = len(messages), time.monotonic()
        return messages

    # --- aggregate: screen, log, then aggregate the accepted replies -------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays = metrics = None
        outcomes: list[Outcome] = []
        try:
            outcomes = self._screen(server_round, TRAIN, replies)
            accepted = [o.reply for o in outcomes if o.status == "ok"]
            if len(accepted) < self.min_replies:
                log_round_skipped(self.run_id, server_round, TRAIN, "too_few_accepted",
                                  f"{len(accepted)} accepted replies, min-replies is {self.min_replies}")
            else:
                arrays, metrics = super().aggregate_train(server_round, accepted)
                if arrays is None:
                    log_round_skipped(self.run_id, server_round, TRAIN, "aggregator_declined",
                                      f"{type(self).__name__} returned no model from {len(accepted)} replies")
                else:
                    _check_finite(arrays, server_round)
                    if self.guard.admits(server_round, arrays, self._current, outcomes):
                        self.rounds_aggregated += 1
                    else:
                        arrays = None
                        for outcome, _ in furthest(outcomes, count=1):
                            self.records.strike(outcome.node_id, server_round, "furthest_in_rejected_round")
        except RunFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad round must never end the run
            arrays = metrics = None
            log_round_skipped(self.run_id, server_round, TRAIN, "round_failed",
                              f"{type(exc).__name__}: {bounded(str(exc), 500)}")
        self._summarize(server_round, TRAIN, outcomes, metrics)
        _stop_if_a_ray_actor_died(server_round, TRAIN, outcomes)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        metrics = None
        outcomes: list[Outcome] = []
        try:
            outcomes = self._screen(server_round, EVALUATE, replies)
            accepted = [o.reply for o in outcomes if o.status == "ok"]
            metrics = super().aggregate_evaluate(server_round, accepted) if accepted else None
        except Exception as exc:  # noqa: BLE001 - one bad round must never end the run
            metrics = None
            log_round_skipped(self.run_id, server_round, EVALUATE, "round_failed",
                              f"{type(exc).__name__}: {bounded(str(exc), 500)}")
        self._summarize(server_round, EVALUATE, outcomes, metrics)
        _stop_if_a_ray_actor_died(server_round, EVALUATE, outcomes)
        return metrics

    def _screen(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Outcome]:
        outcomes = [self._judge(reply, phase) for reply in replies]
        if phase == TRAIN:
            reject_far(outcomes, self.outlier_factor)
            reject_opposed(outcomes, self._global, self.min_cosine)
            self.bound.apply(outcomes, self._global)
            for outcome in outcomes:  # each accepted reply's pace, for its node's next instruction
                if outcome.status == "ok":
                    self.pacer.note(server_round, outcome.node_id, outcome.screened.meta.training_time)
        for outcome in outcomes:
            log_client_round(self.run_id, server_round, phase, outcome, **self._metrics_of(server_round, phase),
                             **self._instruction_of(server_round, phase, outcome))
        self.records.note(server_round, phase, outcomes)
        return outcomes

    def _judge(self, reply: Message, phase: str) -> Outcome:
        if reply.has_error():
            return Outcome.from_error(reply)
        limits = {"expected_metrics": self.expected_metrics[phase], "weight_key": self.weighted_by_key,
                  "max_examples": self.max_examples}
        try:
            if phase == TRAIN:
                screened = screen_train(reply.content, self._global, **limits)
            else:
                screened = screen_evaluate(reply.content, **limits)
        except Rejected as exc:
            return Outcome(reply, "rejected", reason=exc.reason, error=exc.detail)
        return Outcome(reply, "ok", screened=screened)

    def _summarize(self, server_round: int, phase: str, outcomes: list[Outcome], metrics: MetricRecord | None) -> None:
        if not outcomes and not self._sampled.get(phase):
            return  # a phase that is switched off (fraction 0) asked nobody: nothing to say
        started = self._started.get(phase, time.monotonic())
        log_round_summary(self.run_id, server_round, phase, outcomes, metrics,
                          sampled=self._sampled.get(phase, len(outcomes)),
                          duration_s=time.monotonic() - started, **self._metrics_of(server_round, phase))

    def _instruction_of(self, server_round: int, phase: str, outcome: Outcome) -> dict[str, dict]:
        """What a train reply's node was asked to do (app/instructions.py)."""
        instruction = self.pacer.sent(server_round, outcome.node_id) if phase == TRAIN else None
        return {"instruction": dataclasses.asdict(instruction)} if instruction is not None else {}

    def _metrics_of(self, server_round: int, phase: str) -> dict[str, int]:
        """Which global model a line's evaluation metrics are of, where the phase does not say:
        a one-exchange train reply evaluated the model it received, the one after the round
        before (0: the starting model)."""
        return {"evaluated_model": server_round - 1} if phase == TRAIN and self.one_exchange else {}


class _Connected:
    """A Grid seen through one snapshot of its connected nodes."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid, self._node_ids = grid, node_ids

    def get_node_ids(self) -> list[int]:
        return self._node_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _stop_if_a_ray_actor_died(server_round: int, phase: str, outcomes: list[Outcome]) -> None:
    """A Ray node lost mid-run (simulation runtime only): Flower 1.42's actor pool keeps the
    dead actor and hands it a share of every later round's clients, each failing at once
    (flwr/simulation/ray_transport/ray_actor.py, BasicActorPool). The rounds that follow
    would look complete and be mostly failures: the run stops here instead, saying why."""
    died = [o for o in outcomes if o.reason == "ray_actor_died"]
    if died:
        raise RunFailed(f"round {server_round} ({phase}): the Ray actor running {len(died)} ClientApp(s) died, "
                        f"so its Ray node was lost ({bounded(died[0].error, 300)}). Flower's simulation keeps a "
                        "dead actor in its pool and would send it a share of every later round: submit the run "
                        "again, and it runs on the Ray workers that remain (docs/ray.md)")


def _check_finite(arrays: ArrayRecord, server_round: int) -> None:
    for name, array in arrays.items():
        if not np.isfinite(array.numpy()).all():
            raise RunFailed(f"round {server_round}: the aggregated model's array {name!r} holds NaN or "
                            "infinite values; the run stops rather than go on with a broken model")
