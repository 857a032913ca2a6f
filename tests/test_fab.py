"""The FAB that `flwr run` ships to every SuperNode: the app and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_fab_holds_the_app_alone(tmp_path):
    flwr = Path(sys.executable).parent / "flwr"
    result = subprocess.run([str(flwr), "build", "--app", str(ROOT)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    [fab] = tmp_path.glob("*.fab")
    names = set(zipfile.ZipFile(fab).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*") if p.suffix in (".py", ".json")}
    assert names == shipped | {"pyproject.toml", ".info/CONTENT"}
    assert fab.stat().st_size < 200_000
