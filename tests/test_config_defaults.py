"""Each run-config default is stated once, in pyproject.toml's [tool.flwr.app.config]: no
keyword default in app/ says otherwise, every key the code reads is there, and every key
there is read."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

from app import models, run_config
from app.aggregators import AGGREGATORS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
APP_FILES = sorted((ROOT / "app").glob("*.py"))
# Keywords named otherwise than their run-config key.
ALIASES = {"extra_mb": "extra-model-mb", "hidden": "mlp-hidden", "alpha": "dirichlet-alpha"}
# Keywords named like a run-config key that are not that setting.
NOT_RUN_CONFIG = {"app.task.evaluate(batch_size)"}  # evaluation's batches (speed only); batch-size is training's
# How app/ reads a run-config key: config["k"], run_config.get("k"), setting(config, "k"),
# default("k"), CONFIG_DEFAULTS["k"].
READS = re.compile(r"""\b(?:run_)?config(?:\[|\.get\()\s*"([^"]+)"|_?setting\(\s*\w+,\s*"([^"]+)"\)"""
                   r"""|\bdefault\(\s*"([^"]+)"\)|CONFIG_DEFAULTS\["([^"]+)"\]""")


def keyword_defaults() -> dict[str, tuple[str, object]]:
    """'module.Callable(keyword)' -> (run-config key, default) for every keyword default in
    app/ whose name is a run-config key's."""
    found = {}
    for path in APP_FILES:
        module = importlib.import_module(f"app.{path.stem}")
        for name, member in vars(module).items():
            if not (inspect.isfunction(member) or inspect.isclass(member)) or member.__module__ != module.__name__:
                continue
            try:
                parameters = inspect.signature(member).parameters.values()
            except (TypeError, ValueError):  # no signature to read
                continue
            for parameter in parameters:
                key = ALIASES.get(parameter.name, parameter.name.replace("_", "-"))
                where = f"{module.__name__}.{name}({parameter.name})"
                # None: "not given" (e.g. no label range to check), never a setting's value.
                if key in PYPROJECT and parameter.default not in (inspect.Parameter.empty, None) \
                        and where not in NOT_RUN_CONFIG:
                    found[where] = (key, parameter.default)
    return found


def keys_read() -> set[str]:
    keys = {key for path in APP_FILES for match in READS.findall(path.read_text()) for key in match if key}
    return keys | {key for _, takes in AGGREGATORS.values() for key in takes.values()}


def test_the_reader_reads_this_pyproject():
    assert run_config.PYPROJECT == ROOT / "pyproject.toml" and dict(run_config.defaults()) == PYPROJECT


def test_every_keyword_default_is_the_run_configs():
    found = keyword_defaults()
    wrong = {where: (default, PYPROJECT[key]) for where, (key, default) in found.items() if default != PYPROJECT[key]}
    assert not wrong, f"keyword defaults that are not pyproject.toml's (found, pyproject): {wrong}"
    # Not vacuous: the settings that code outside a run builds with are among those checked.
    checked = set(found)
    for where in ("app.strategy.ScreenedStrategy(min_replies)", "app.strategy.ScreenedStrategy(outlier_factor)",
                  "app.quorum.WaitPolicy(min_replies)", "app.quorum.WaitPolicy(straggler_timeout)",
                  "app.aggregators.build_strategy(num_malicious)", "app.models.MLP(hidden)",
                  "app.task.load_partition(alpha)"):
        assert where in checked, where


def test_the_models_written_out_defaults_are_pyprojects():
    assert models.CONFIG_DEFAULTS == {key: PYPROJECT[key] for key in models.CONFIG_DEFAULTS}


def test_every_key_the_code_reads_is_in_pyproject():
    assert keys_read() - set(PYPROJECT) == set()


def test_every_pyproject_key_is_read():
    assert set(PYPROJECT) - keys_read() == set()
