"""A lying variant of this app, assembled for the fault tests and the fault benchmark."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from tests.fab_packages import copy_app, shipping  # noqa: E402


def assemble(dest: Path) -> Path:
    """`dest` as a Flower app: this repository's `app/`, its pyproject with the ClientApp
    swapped for rogue_client.py's, and a run-config key `attacks` (see rogue_client.py)."""
    copy_app(dest)
    shutil.copy(Path(__file__).with_name("rogue_client.py"), dest)
    pyproject = (dest / "pyproject.toml").read_text()
    pyproject = pyproject.replace('clientapp = "app.client_app:app"', 'clientapp = "rogue_client:app"')
    pyproject = pyproject.replace("[tool.flwr.app.config]\n", '[tool.flwr.app.config]\nattacks = ""\n')
    pyproject = shipping(pyproject, "rogue_client.py")
    assert "rogue_client.py" in pyproject, "the FAB would not ship the lying ClientApp: see fab-include"
    (dest / "pyproject.toml").write_text(pyproject)
    dest.chmod(0o755)  # the submit container reads it as another user
    return dest
