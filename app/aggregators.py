"""The aggregators a run config may name, each a Flower strategy behind the screening
layer (app/strategy.py), and `build_strategy`, which makes the one named."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import Bulyan, FedAdagrad, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from app.strategy import ScreenedStrategy


class ScreenedFedAvg(ScreenedStrategy, FedAvg):
    """FedAvg: the example-weighted mean (no protection against a lying client)."""


class ScreenedFedAdagrad(ScreenedStrategy, FedAdagrad):
    """FedAdagrad: adaptive server learning rate (no protection against a lying client)."""


class ScreenedFedMedian(ScreenedStrategy, FedMedian):
    """Coordinate-wise median: tolerates a minority of arbitrary updates."""


class ScreenedFedTrimmedAvg(ScreenedStrategy, FedTrimmedAvg):
    """Coordinate-wise mean without the `trimmed-beta` share of extremes on each side."""


class ScreenedKrum(ScreenedStrategy, Krum):
    """The one update closest to its neighbours; needs more than 2f + 2 updates."""


class ScreenedMultiKrum(ScreenedStrategy, MultiKrum):
    """The mean of the `krum-select` updates that Krum ranks best."""


class ScreenedBulyan(ScreenedStrategy, Bulyan):
    """Krum selection, then a trimmed mean; needs at least 4f + 3 updates."""


STRATEGIES: dict[str, type[ScreenedStrategy]] = {
    "fedavg": ScreenedFedAvg,
    "fedadagrad": ScreenedFedAdagrad,
    "fedmedian": ScreenedFedMedian,
    "fedtrimmedavg": ScreenedFedTrimmedAvg,
    "krum": ScreenedKrum,
    "multikrum": ScreenedMultiKrum,
    "bulyan": ScreenedBulyan,
}


def build_strategy(
    name: str,
    *,
    server_learning_rate: float = 0.1,
    trimmed_beta: float = 0.2,
    num_malicious: int = 1,
    krum_select: int = 2,
    **kwargs: Any,
) -> ScreenedStrategy:
    """The strategy named in the run config, with only the options it takes."""
    try:
        cls = STRATEGIES[name.lower()]
    except KeyError:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}") from None
    if issubclass(cls, FedAdagrad):
        kwargs["eta"] = server_learning_rate
    if issubclass(cls, FedTrimmedAvg):
        kwargs["beta"] = trimmed_beta
    if issubclass(cls, (MultiKrum, Bulyan)):  # Krum is a MultiKrum that selects one
        kwargs["num_malicious_nodes"] = num_malicious
    if cls is ScreenedMultiKrum:
        kwargs["num_nodes_to_select"] = krum_select
    return cls(**kwargs)
