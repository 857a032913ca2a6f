"""The strategy's log lines (schema: docs/log-schema.md).

  client_round   one per node asked, per round and phase, with its `status`:
                   ok        screened and aggregated (or, for evaluate, averaged);
                   rejected  it replied, but screening refused it (`reason`, `error`);
                   failed    its ClientApp returned an error instead of a result;
                   missing   no reply: the node is lost, or did not answer in time.
  round_summary  one per round and phase: counts, timings, aggregated metrics.
  round_skipped  a train round that kept the previous global model, and why.
  round_rejected a train round whose aggregate the model guard refused (app/model_guard.py).
  node_excluded  a node left out of sampling for the rest of the run (app/node_record.py).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from flwr.app import Message, MetricRecord
from flwr.common.constant import ErrorCode

from flowerdock_logging import get_logger
from app.screening import Screened, bounded

log = get_logger("app.strategy")

TRAIN, EVALUATE = "train", "evaluate"

SITE_DATA_ERROR = "SiteDataError'>"  # app/site_data.py: the site's own data cannot be used
# Flower's simulation runtime (Ray) replies with the Ray error's class when the actor that
# runs a virtual SuperNode's ClientApp is gone (its Ray node lost) or not reachable now.
RAY_ACTOR_ERRORS = {"<class 'ray.exceptions.ActorDiedError'>": "ray_actor_died",
                    "<class 'ray.exceptions.ActorUnavailableError'>": "ray_actor_unavailable"}

# Flower's error codes, as the `reason` of a failed or missing reply.
_ERROR_REASONS = {
    ErrorCode.LOAD_CLIENT_APP_EXCEPTION: ("failed", "clientapp_load_failed"),
    ErrorCode.CLIENT_APP_RAISED_EXCEPTION: ("failed", "clientapp_raised"),
    ErrorCode.CLIENT_APP_CRASHED: ("failed", "clientapp_crashed"),
    ErrorCode.INVALID_FAB: ("failed", "invalid_fab"),
    ErrorCode.MOD_FAILED_PRECONDITION: ("failed", "mod_failed"),
    ErrorCode.MESSAGE_UNAVAILABLE: ("missing", "message_unavailable"),
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE: ("missing", "no_reply"),  # app/quorum.py's NO_REPLY
    ErrorCode.NODE_UNAVAILABLE: ("missing", "node_unavailable"),
}


@dataclass
class Outcome:
    """What one reply amounted to."""

    reply: Message
    status: str  # ok | rejected | failed | missing
    reason: str | None = None
    error: str | None = None
    screened: Screened | None = None
    clipped: dict[str, float | int] = field(default_factory=dict)  # app/bounding.py: what was cut, if anything

    @classmethod
    def from_error(cls, reply: Message) -> Outcome:
        status, reason = _ERROR_REASONS.get(reply.error.code, ("failed", "error"))
        # Flower's reason names the exception's class: "<class '...SiteDataError'>:<'message'>".
        if reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION and SITE_DATA_ERROR in (reply.error.reason or ""):
            reason = "site_data_invalid"
        for prefix, ray_reason in RAY_ACTOR_ERRORS.items():
            if (reply.error.reason or "").startswith(prefix):
                reason = ray_reason
        return cls(reply, status, reason=reason, error=f"code {reply.error.code}: {bounded(reply.error.reason, 500)}")

    @property
    def node_id(self) -> int:
        return self.reply.metadata.src_node_id  # the node asked (app/quorum.py re-addresses SuperLink errors)

    def reject(self, reason: str, error: str) -> None:
        self.status, self.reason, self.error, self.screened = "rejected", reason, error, None


def log_client_round(run_id: int, server_round: int, phase: str, outcome: Outcome, **context: Any) -> None:
    """`context`: what the line's metrics are of, where the phase does not say it alone
    (`evaluated_model`: a one-exchange round's train reply evaluates the model of the round before)."""
    fields: dict[str, Any] = {"run_id": run_id, "server_round": server_round, "phase": phase,
                              "node_id": outcome.node_id, "status": outcome.status, **context}
    if outcome.status != "ok":
        log.warning("client_round", **fields, reason=outcome.reason, error=outcome.error)
        return
    screened = outcome.screened
    # label_counts only when the site opted in (docs/site-data.md: what leaves a site)
    fields.update({k: v for k, v in asdict(screened.meta).items() if v is not None}, metrics=screened.metrics)
    if screened.update_norm is not None:
        fields.update(update_norm=screened.update_norm, update_distance=screened.update_distance)
    if outcome.clipped:
        fields["clipped"] = outcome.clipped
    log.info("client_round", **fields)


def log_round_skipped(run_id: int, server_round: int, phase: str, reason: str, detail: str) -> None:
    kept = {"hint": "the previous global model is kept"} if phase == TRAIN else {}
    log.warning("round_skipped", run_id=run_id, server_round=server_round, phase=phase, reason=reason,
                detail=detail, **kept)


def log_round_summary(run_id: int, server_round: int, phase: str, outcomes: list[Outcome],
                      metrics: MetricRecord | None, *, sampled: int, duration_s: float, **context: Any) -> None:
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ok", "rejected", "failed", "missing")}
    counts["missing"] += max(sampled - len(outcomes), 0)  # with a Grid that drops unanswered messages
    timing = "training_time" if phase == TRAIN else "evaluation_time"
    times = [getattr(o.screened.meta, timing) for o in outcomes if o.status == "ok"]
    fields: dict[str, Any] = {
        "run_id": run_id, "server_round": server_round, "phase": phase, "sampled": sampled,
        "replies": len(outcomes) - sum(o.status == "missing" for o in outcomes), **counts,
        f"{timing}_min": min(times) if times else None,
        f"{timing}_mean": statistics.fmean(times) if times else None,
        f"{timing}_max": max(times) if times else None,
        "duration_s": round(duration_s, 3),
        "metrics": dict(metrics) if metrics is not None else None,
        **context,
    }
    if phase == TRAIN:
        fields["converged"] = sum(1 for o in outcomes if o.status == "ok" and o.screened.meta.converged)
    log.info("round_summary", **fields)
