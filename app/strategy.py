"""The server side of the metadata path.

Before aggregating, the strategy screens every reply: it decodes the reply's CBOR
metadata and checks that the records Flower will aggregate have the shape of the
global model. Each reply yields exactly one `client_round` log line with status

  ok        metadata decoded, records fit: the update is aggregated;
  rejected  the reply arrived but its metadata or records are invalid: it is left
            out of aggregation (it is not the code we expect, by bug or by intent);
  failed    the ClientApp returned an error instead of a result.

Then one `round_summary` line per round and phase, and aggregation proceeds with
the accepted replies only, as the base strategy (FedAvg or FedAdagrad) does it.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAvg

from app.logging import get_logger
from app.metadata import EvaluateProcessMetadata, MetadataError, TrainProcessMetadata, from_content

log = get_logger("app.strategy")

TRAIN, EVALUATE = "train", "evaluate"
_KIND = {TRAIN: TrainProcessMetadata, EVALUATE: EvaluateProcessMetadata}


@dataclass
class Outcome:
    """What one reply amounted to."""

    node_id: int
    status: str  # ok | rejected | failed
    error: str | None = None
    meta: TrainProcessMetadata | EvaluateProcessMetadata | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class MetadataLogging:
    """Mixin for a Flower strategy: screen and log every reply, then aggregate."""

    def __init__(self, *, run_id: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self._global_arrays: ArrayRecord | None = None
        self._sampled: dict[str, int] = {}
        self._started: dict[str, float] = {}

    # --- configure: remember what was asked, to judge the replies --------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global_arrays = arrays
        return self._remember(TRAIN, super().configure_train(server_round, arrays, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._remember(EVALUATE, super().configure_evaluate(server_round, arrays, config, grid))

    def _remember(self, phase: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self._sampled[phase] = len(messages)
        self._started[phase] = time.monotonic()
        return messages

    # --- aggregate: screen, log, then aggregate the accepted replies -------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted, outcomes = self._screen(server_round, TRAIN, replies)
        arrays, metrics = super().aggregate_train(server_round, accepted) if accepted else (None, None)
        self._summarize(server_round, TRAIN, outcomes, metrics)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        accepted, outcomes = self._screen(server_round, EVALUATE, replies)
        metrics = super().aggregate_evaluate(server_round, accepted) if accepted else None
        self._summarize(server_round, EVALUATE, outcomes, metrics)
        return metrics

    def _screen(self, server_round: int, phase: str, replies: Iterable[Message]) -> tuple[list[Message], list[Outcome]]:
        replies = list(replies)
        outcomes = [self._judge(reply, phase) for reply in replies]
        _reject_odd_metric_keys(outcomes)
        for outcome in outcomes:
            self._log_client_round(server_round, phase, outcome)
        accepted = [reply for reply, outcome in zip(replies, outcomes) if outcome.status == "ok"]
        return accepted, outcomes

    def _judge(self, reply: Message, phase: str) -> Outcome:
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            return Outcome(node_id, "failed", error=f"code {reply.error.code}: {reply.error.reason}")
        try:
            metrics = self._check_records(reply, phase)
            meta = from_content(reply.content, _KIND[phase])
        except MetadataError as exc:
            return Outcome(node_id, "rejected", error=str(exc))
        return Outcome(node_id, "ok", meta=meta, metrics=metrics)

    def _check_records(self, reply: Message, phase: str) -> dict[str, Any]:
        """The checks that would otherwise make Flower abort the whole round."""
        content = reply.content
        if len(content.metric_records) != 1:
            raise MetadataError(f"expected one MetricRecord, got {len(content.metric_records)}")
        metrics = dict(next(iter(content.metric_records.values())))
        examples = metrics.get(self.weighted_by_key)
        if type(examples) not in (int, float) or not examples > 0:
            raise MetadataError(f"MetricRecord needs a positive '{self.weighted_by_key}', got {examples!r}")
        if phase == TRAIN:
            _check_arrays_fit(content.array_records, self._global_arrays)
        return metrics

    # --- log lines ------------------------------------------------------------------

    def _log_client_round(self, server_round: int, phase: str, outcome: Outcome) -> None:
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "server_round": server_round,
            "phase": phase,
            "node_id": outcome.node_id,
            "status": outcome.status,
        }
        if outcome.status == "ok":
            fields.update(asdict(outcome.meta), metrics=outcome.metrics)
            log.info("client_round", **fields)
        else:
            log.warning("client_round", **fields, error=outcome.error)

    def _summarize(
        self, server_round: int, phase: str, outcomes: list[Outcome], metrics: MetricRecord | None
    ) -> None:
        counts = Counter(o.status for o in outcomes)
        sampled = self._sampled.get(phase, len(outcomes))
        timing = "training_time" if phase == TRAIN else "evaluation_time"
        times = [getattr(o.meta, timing) for o in outcomes if o.status == "ok"]
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "server_round": server_round,
            "phase": phase,
            "sampled": sampled,
            "replies": len(outcomes),
            "missing": max(sampled - len(outcomes), 0),
            "ok": counts["ok"],
            "rejected": counts["rejected"],
            "failed": counts["failed"],
            f"{timing}_min": min(times) if times else None,
            f"{timing}_mean": statistics.fmean(times) if times else None,
            f"{timing}_max": max(times) if times else None,
            "duration_s": round(time.monotonic() - self._started.get(phase, time.monotonic()), 3),
            "metrics": dict(metrics) if metrics is not None else None,
        }
        if phase == TRAIN:
            fields["converged"] = sum(1 for o in outcomes if o.status == "ok" and o.meta.converged)
        log.info("round_summary", **fields)


def _check_arrays_fit(array_records: Any, global_arrays: ArrayRecord | None) -> None:
    if len(array_records) != 1:
        raise MetadataError(f"expected one ArrayRecord, got {len(array_records)}")
    if global_arrays is None:
        return
    arrays = next(iter(array_records.values()))
    if set(arrays.keys()) != set(global_arrays.keys()):
        raise MetadataError("ArrayRecord keys differ from the global model's")
    for key, expected in global_arrays.items():
        got = arrays[key]
        if tuple(got.shape) != tuple(expected.shape) or got.dtype != expected.dtype:
            raise MetadataError(f"array '{key}' is {got.dtype}{list(got.shape)}, expected {expected.dtype}{list(expected.shape)}")


def _reject_odd_metric_keys(outcomes: list[Outcome]) -> None:
    """Flower aggregates metrics only if every reply has the same keys: keep the
    most common key set and reject the replies that differ from it."""
    key_sets = Counter(frozenset(o.metrics) for o in outcomes if o.status == "ok")
    if len(key_sets) <= 1:
        return
    usual = key_sets.most_common(1)[0][0]
    for outcome in outcomes:
        if outcome.status == "ok" and frozenset(outcome.metrics) != usual:
            outcome.status, outcome.error = "rejected", f"metric keys {sorted(outcome.metrics)} differ from the others' {sorted(usual)}"


class LoggingFedAvg(MetadataLogging, FedAvg):
    """FedAvg that screens and logs every reply."""


class LoggingFedAdagrad(MetadataLogging, FedAdagrad):
    """FedAdagrad that screens and logs every reply."""


STRATEGIES = {"fedavg": LoggingFedAvg, "fedadagrad": LoggingFedAdagrad}


def build_strategy(name: str, *, run_id: int, server_learning_rate: float, **kwargs: Any) -> MetadataLogging:
    """The strategy named in the run config (`strategy = "fedavg" | "fedadagrad"`)."""
    try:
        cls = STRATEGIES[name.lower()]
    except KeyError:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}") from None
    if cls is LoggingFedAdagrad:
        kwargs["eta"] = server_learning_rate
    return cls(run_id=run_id, **kwargs)
