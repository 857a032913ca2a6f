"""`make cli`: Flower's CLI alone, as locked (locks/cli.txt), for a laptop that only submits runs
(docs/deployment.md). It downloads from PyPI (about 300 MB): marked `network`, not in make test-fast.
That it submits a run to a deployment: tests/test_deployment.py."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.fab_packages import copy_app

pytestmark = pytest.mark.network


def test_make_cli_installs_the_flwr_cli_alone(cli_venv, tmp_path):
    venv = cli_venv
    python = venv / "bin" / "python"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = Requirement(next(r for r in dependencies if r.startswith("flwr"))).specifier
    version = subprocess.run([python, "-c", "from importlib.metadata import version; print(version('flwr'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version in pinned
    for absent in ("torch", "app", "flowerdock_logging"):  # nothing but the CLI
        assert subprocess.run([python, "-c", f"import {absent}"], cwd="/", capture_output=True).returncode != 0, absent
    project = tmp_path / "flowerdock"  # Flower wants the app's folder named as an app may be
    copy_app(project)
    built = subprocess.run([venv / "bin" / "flwr", "build", "--app", "."], cwd=project,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0 and list(project.glob("*.fab")), built.stdout + built.stderr  # `flwr run` packs it so
