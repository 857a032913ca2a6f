"""The run config's defaults, stated once: pyproject.toml's [tool.flwr.app.config].

Flower hands the ServerApp and every ClientApp the run config with these defaults
merged in (context.run_config): the apps read their settings there. This is for code
that runs without a run config: a strategy, a wait policy or a partition built in a unit
test or a script takes its keyword defaults from here, and so cannot drift from what
every deployment runs (tests/test_config_defaults.py fails where code states one otherwise).

The file is read once, from the app's root: the repository's, or the FAB's, which
Flower unpacks with its pyproject.toml beside app/.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@cache
def defaults() -> Mapping[str, Any]:
    """Every run-config key with its default value (read-only: it is shared)."""
    try:
        text = PYPROJECT.read_text()
    except FileNotFoundError:
        raise RuntimeError(f"no {PYPROJECT}: the run config's defaults are read from the app's project (this "
                           "repository, or a FAB); a copy of `app` installed without one gets its run config "
                           "from Flower, not from here") from None
    return MappingProxyType(tomllib.loads(text)["tool"]["flwr"]["app"]["config"])


def default(key: str) -> Any:
    return defaults()[key]


def setting(config: Mapping[str, Any], key: str) -> Any:
    """`config[key]`, or its default where `config` is partial (a test's hand-made one)."""
    return config[key] if key in config else default(key)
