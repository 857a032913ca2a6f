"""The models a run can choose with run config `model`, and what each takes as input.

  cnn  a small CNN for 8x8 grey-scale digits (64 features per sample, as 1x8x8)
  mlp  a multi-layer perceptron on `num-features` flat features (e.g. CSV columns),
       `mlp-hidden` units wide

Every model classifies into `num-classes` labels. Adding one: a class here, an
entry in `MODELS` (docs/bring-your-own-model.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

# The run config's model settings as pyproject.toml states them, for a config that lacks them.
# Written out, not read (app/run_config.py), because the SuperNode image's site-data check
# (docker/site_data_watch.py) imports this module from the installed package, which has no
# pyproject.toml; tests/test_config_defaults.py fails if the two ever differ.
CONFIG_DEFAULTS = {"model": "cnn", "num-features": 64, "num-classes": 10, "mlp-hidden": 128, "extra-model-mb": 0}


class Net(nn.Module):
    """A small CNN for 8x8 grey-scale digits."""

    INPUT_SHAPE = (1, 8, 8)

    def __init__(self, extra_mb: float = CONFIG_DEFAULTS["extra-model-mb"],
                 num_classes: int = CONFIG_DEFAULTS["num-classes"]) -> None:
        super().__init__()
        add_extra(self, extra_mb)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Two hidden layers on flat features: tabular data, CSV columns."""

    def __init__(self, num_features: int, num_classes: int = CONFIG_DEFAULTS["num-classes"],
                 hidden: int = CONFIG_DEFAULTS["mlp-hidden"],
                 extra_mb: float = CONFIG_DEFAULTS["extra-model-mb"]) -> None:
        super().__init__()
        add_extra(self, extra_mb)
        self.layers = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def add_extra(model: nn.Module, extra_mb: float) -> None:
    """extra_mb > 0 adds that many MiB to the model as a buffer: shipped, screened and
    aggregated like the weights, never trained (run config `extra-model-mb`: how a
    round scales with the model's size). Fixed pseudo-random numbers, not zeros:
    Flower stores messages as content-addressed chunks, and chunks of zeros are all one."""
    if extra_mb > 0:
        numbers = torch.randn(int(extra_mb * 2**20) // 4, generator=torch.Generator().manual_seed(0))
        model.register_buffer("extra", numbers)


def _setting(config: Mapping, key: str):
    return config.get(key, CONFIG_DEFAULTS[key])


def _cnn(config: Mapping) -> nn.Module:
    return Net(float(_setting(config, "extra-model-mb")), int(_setting(config, "num-classes")))


def _mlp(config: Mapping) -> nn.Module:
    return MLP(int(_setting(config, "num-features")), int(_setting(config, "num-classes")),
               int(_setting(config, "mlp-hidden")), float(_setting(config, "extra-model-mb")))


# name -> (builder, the input shape of one sample given the run config)
MODELS: dict[str, tuple[Callable[[Mapping], nn.Module], Callable[[Mapping], tuple[int, ...]]]] = {
    "cnn": (_cnn, lambda config: Net.INPUT_SHAPE),
    "mlp": (_mlp, lambda config: (int(_setting(config, "num-features")),)),
}


def _choice(config: Mapping):
    name = str(_setting(config, "model"))
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    return MODELS[name]


def build_model(config: Mapping) -> nn.Module:
    """The run's model, freshly initialised."""
    return _choice(config)[0](config)


def input_shape(config: Mapping) -> tuple[int, ...]:
    """The shape of one sample as the run's model takes it."""
    return _choice(config)[1](config)


def num_features(config: Mapping) -> int:
    return math.prod(input_shape(config))


def num_classes(config: Mapping) -> int:
    return int(_setting(config, "num-classes"))
