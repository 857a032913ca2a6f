"""The FAB that `flwr run` ships to every SuperNode: the app and nothing else."""

from __future__ import annotations

import io
import zipfile

from flwr.cli.build import build_fab_from_disk

from tests.conftest import ROOT


def test_the_fab_holds_the_app_alone():
    # What `flwr run` builds (`flwr build` would also insist on the checkout folder's name).
    fab = build_fab_from_disk(ROOT)
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*") if p.suffix in (".py", ".json")}
    assert names == shipped | {"pyproject.toml", ".info/CONTENT"}
    assert len(fab) < 200_000
