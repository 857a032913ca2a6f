"""The aggregators a run config may name, each a Flower strategy behind the screening
layer (app/strategy.py), and `build_strategy`, which makes the one named."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import Bulyan, FedAdagrad, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from app.run_config import default
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


# name -> (the strategy, {its Flower keyword: the run-config key that sets it}): each takes
# only the options its Flower class has (Flower 1.42, flwr/serverapp/strategy/).
AGGREGATORS: dict[str, tuple[type[ScreenedStrategy], dict[str, str]]] = {
    "fedavg": (ScreenedFedAvg, {}),
    "fedadagrad": (ScreenedFedAdagrad, {"eta": "server-learning-rate"}),
    "fedmedian": (ScreenedFedMedian, {}),
    "fedtrimmedavg": (ScreenedFedTrimmedAvg, {"beta": "trimmed-beta"}),
    "krum": (ScreenedKrum, {"num_malicious_nodes": "num-malicious"}),
    "multikrum": (ScreenedMultiKrum, {"num_malicious_nodes": "num-malicious", "num_nodes_to_select": "krum-select"}),
    "bulyan": (ScreenedBulyan, {"num_malicious_nodes": "num-malicious"}),
}
STRATEGIES: dict[str, type[ScreenedStrategy]] = {name: cls for name, (cls, _) in AGGREGATORS.items()}


def build_strategy(
    name: str,
    *,
    server_learning_rate: float = default("server-learning-rate"),
    trimmed_beta: float = default("trimmed-beta"),
    num_malicious: int = default("num-malicious"),
    krum_select: int = default("krum-select"),
    **kwargs: Any,
) -> ScreenedStrategy:
    """The strategy named in the run config, with only the options it takes."""
    try:
        cls, takes = AGGREGATORS[name.lower()]
    except KeyError:
        raise ValueError(f"strategy must be one of {', '.join(AGGREGATORS)}, got {name!r}") from None
    options = {"server-learning-rate": server_learning_rate, "trimmed-beta": trimmed_beta,
               "num-malicious": num_malicious, "krum-select": krum_select}
    return cls(**kwargs, **{keyword: options[key] for keyword, key in takes.items()})
