"""The FAB that `flwr run` ships to every SuperNode: the app, the flowerdock layer it imports, nothing else."""

from __future__ import annotations

import io
import zipfile

from flwr.cli.build import build_fab_from_disk

from tests.conftest import ROOT, run_python


def test_the_fab_holds_the_app_and_its_message_layer_alone():
    # What `flwr run` builds (`flwr build` would also insist on the checkout folder's name).
    fab = build_fab_from_disk(ROOT)
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    shipped = {str(p.relative_to(ROOT)) for package in ("app", "flowerdock") for p in (ROOT / package).rglob("*")
               if p.suffix in (".py", ".json")}
    assert names == shipped | {"pyproject.toml", ".info/CONTENT"}
    assert len(fab) < 250_000  # stored, not compressed: app/ and flowerdock/ are about 215 kB


FAB_IMPORT_PROBE = r"""
import io, os, sys, zipfile
from pathlib import Path
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.object_ref import load_app
root = Path(os.environ["FAB_DIR"])
zipfile.ZipFile(io.BytesIO(build_fab_from_disk(Path(os.getcwd())))).extractall(root)
os.chdir("/")
already = "flowerdock" in sys.modules
load_app("app.client_app:app", ValueError, root)  # as Flower loads a ClientApp from an installed FAB
import flowerdock
print(already, Path(flowerdock.__file__).is_relative_to(root),
      Path(sys.modules["app.metadata"].__file__).is_relative_to(root))
"""


def test_a_clientapp_loaded_from_the_fab_imports_the_fabs_flowerdock(tmp_path):
    # Flower puts the FAB's folder first on sys.path; the checkout's (or an image's installed) copy
    # loses as long as nothing imported `flowerdock` before: not the logging hook, not the fork server.
    result = run_python(FAB_IMPORT_PROBE, FAB_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["False", "True", "True"]
