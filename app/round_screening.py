"""Judging each train update against the others of its round.

app/screening.py judges a reply alone: what it *is*. Here each update that passed is
compared with its round's others, for what it *does* (both need three updates, so that
one liar cannot be the reference):

  far      farther from the global model than `outlier_factor` x the round's median
           distance: `outlier_update`. A boosted or sign-flipped x10 update, noise far
           larger than training moves the model;
  opposed  pointing away from where the others go: the cosine between its step and the
           sum of the others' unit steps is below `min_cosine`: `opposed_update`. A
           sign-flipped update of honest size, which no distance rule sees.

Rejected updates are logged with their reason and never aggregated, and count as a
strike on the node's record (app/node_record.py).
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from flwr.app import ArrayRecord

from app.round_log import Outcome
from app.screening import GlobalModel, _flat, _records

MIN_UPDATES = 3  # with two, the median is their mean and the "others" are one: neither can tell which is off


def reject_far(outcomes: list[Outcome], factor: float) -> None:
    """Reject updates farther from the global model than `factor` x the round's median distance."""
    accepted = [o for o in outcomes if o.status == "ok"]
    if factor <= 0 or len(accepted) < MIN_UPDATES:
        return
    median = statistics.median(o.screened.update_distance for o in accepted)
    for outcome in accepted:
        if outcome.screened.update_distance > factor * median:
            outcome.reject("outlier_update", f"update distance {outcome.screened.update_distance:.4g} is over "
                                             f"{factor:g} x the round's median {median:.4g}")


def reject_opposed(outcomes: list[Outcome], model: GlobalModel, min_cosine: float) -> None:
    """Reject updates whose step points away from the sum of the others' unit steps.

    Two passes over the replies' arrays, so that memory stays one model's worth whatever
    the number of replies: the sum S of unit steps, then each step's u . S, from which
    cos(u, S - u) = (u . S - 1) / |S - u|, with |S - u|^2 = |S|^2 - 2 u . S + 1.
    """
    accepted = [o for o in outcomes if o.status == "ok" and o.screened.update_distance > 0]
    if min_cosine <= -1 or len(accepted) < MIN_UPDATES:
        return
    total = np.zeros_like(model.flat)
    for outcome in accepted:
        total += _step(outcome, model) / outcome.screened.update_distance
    total_sq = float(total @ total)
    for outcome in accepted:
        along = float(_step(outcome, model) @ total) / outcome.screened.update_distance
        rest = math.sqrt(max(total_sq - 2 * along + 1, 0.0))
        cosine = (along - 1) / rest if rest > 0 else 1.0
        if cosine < min_cosine:
            outcome.reject("opposed_update", f"its step points away from the round's others: cosine {cosine:.3f} "
                                             f"with the sum of their directions, below min-cosine {min_cosine:g}")


def _step(outcome: Outcome, model: GlobalModel) -> np.ndarray:
    [record] = _records(outcome.reply.content, ArrayRecord)  # one, as screening checked
    return _flat(array.numpy() for array in record.values()) - model.flat
