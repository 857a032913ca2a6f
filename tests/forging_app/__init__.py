"""A variant of this app whose ClientApp forges the ServerApp's log lines, assembled for the
aggregator's test (tests/test_aggregator.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from tests.fab_packages import copy_app, shipping  # noqa: E402


def assemble(dest: Path) -> Path:
    """`dest` as a Flower app: this repository's `app/` and its pyproject, with the ClientApp
    swapped for forging_client.py's (shipped in the FAB through fab-include)."""
    copy_app(dest)
    shutil.copy(Path(__file__).with_name("forging_client.py"), dest)
    pyproject = (dest / "pyproject.toml").read_text()
    pyproject = pyproject.replace('clientapp = "app.client_app:app"', 'clientapp = "forging_client:app"')
    pyproject = shipping(pyproject, "forging_client.py")
    assert "forging_client:app" in pyproject and "forging_client.py" in pyproject, \
        "the FAB would not ship the forging ClientApp: see clientapp and fab-include in pyproject.toml"
    (dest / "pyproject.toml").write_text(pyproject)
    dest.chmod(0o755)  # the submit container reads it as another user
    return dest
