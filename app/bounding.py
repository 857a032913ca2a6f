"""Bounding how far one party can pull the model, before any aggregator sees its update.

Screening (app/screening.py) judges what an update *is*: finite, well-formed. This
judges what it *does*. Each round, over the train replies that passed screening:

  distance  an update farther from the global model than `factor` x the round's
            median distance is scaled back onto that bound: a boosted, sign-flipped
            or noisy update keeps its direction and loses its size;
  weight    an example count above `factor` x the round's median count is cut to it,
            so that no party buys a larger share of a weighted mean by claiming data.

Honest updates sit near the median and pass untouched. The median needs three
updates to tell which one is off (with two it is their mean): a round with fewer
uses the bounds of the last round that had three, or none before such a round.
A majority of colluders moves the median itself: that, no bound can stop.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from app.round_log import Outcome
from app.screening import GlobalModel

MIN_UPDATES_FOR_MEDIAN = 3


@dataclass(frozen=True)
class Bounds:
    distance: float  # the most an update may move the model (L2)
    examples: float  # the most examples a reply may count for


class UpdateBound:
    """Clips each round's accepted train replies in place; remembers the last bounds."""

    def __init__(self, factor: float, weight_key: str) -> None:
        if factor and factor < 1:
            raise ValueError(f"clip-factor must be 0 (off) or at least 1, got {factor:g}: below 1 it would "
                             "shrink most honest updates")
        self.factor, self.weight_key = factor, weight_key
        self.last: Bounds | None = None

    def apply(self, outcomes: list[Outcome], model: GlobalModel) -> Bounds | None:
        """Bound every accepted reply of `outcomes`; each clipped one says so on its Outcome."""
        accepted = [o for o in outcomes if o.status == "ok"]
        if not self.factor or not accepted:
            return None
        bounds = self._bounds(accepted)
        if bounds is None:
            return None
        for outcome in accepted:
            distance = outcome.screened.update_distance
            if distance > bounds.distance:
                scale = bounds.distance / distance
                _scale_update(outcome.reply.content, model, scale)
                outcome.clipped["distance_scale"] = round(scale, 6)
            examples = outcome.screened.metrics[self.weight_key]
            if examples > bounds.examples:
                capped = max(int(bounds.examples), 1)
                _set_weight(outcome.reply.content, self.weight_key, capped)
                outcome.clipped["examples_capped_to"] = capped
        return bounds

    def _bounds(self, accepted: list[Outcome]) -> Bounds | None:
        if len(accepted) >= MIN_UPDATES_FOR_MEDIAN:
            median_distance = statistics.median(o.screened.update_distance for o in accepted)
            median_examples = statistics.median(o.screened.metrics[self.weight_key] for o in accepted)
            self.last = Bounds(self.factor * median_distance, self.factor * median_examples)
        return self.last


def _scale_update(content: RecordDict, model: GlobalModel, scale: float) -> None:
    """The reply's model becomes global + scale x (reply - global), in the global model's dtypes.

    Integer arrays (counters such as BatchNorm's) are left as they are: they are not
    moved by a step, and screening has checked their dtype and shape already.
    """
    name, record = _only(content, ArrayRecord)
    scaled = {}
    for key, array in record.items():
        value, base = array.numpy(), model[key]
        if base.dtype.kind == "f" and math.isfinite(scale):
            step = value.astype(np.float64) - base
            value = (base + scale * step).astype(base.dtype)
        scaled[key] = Array(np.ascontiguousarray(value))
    content[name] = ArrayRecord(scaled)


def _set_weight(content: RecordDict, weight_key: str, examples: int) -> None:
    name, record = _only(content, MetricRecord)
    content[name] = MetricRecord({**dict(record), weight_key: examples})


def _only(content: RecordDict, kind: type) -> tuple[str, ArrayRecord | MetricRecord]:
    [(name, record)] = [(name, record) for name, record in content.items() if isinstance(record, kind)]
    return name, record
