"""Ships the submitted run's app (its FAB's folder) to every Ray node: a Ray
runtime-env hook, set with RAY_RUNTIME_ENV_HOOK=fab_runtime_env.ship_fab in the
simulation driver's container (docker/compose.ray.yaml).

Flower's Ray backend (flwr/server/superlink/fleet/vce/backend/raybackend.py)
calls `ray.init(runtime_env={"env_vars": {"PYTHONPATH": <the driver's sys.path>}})`:
a path list, and the FAB is unpacked only in the driver's container
($FLWR_HOME/apps/<publisher>.<app>.<version>.<hash>/). A worker in another
container would import the ClientApp's module from that list without finding
the folder, so from whatever else is on its path: the images carry a copy of
`app` in site-packages, and it would run that copy instead of the submitted
code, silently. Ray calls this hook with Flower's runtime_env in `ray.init`;
it adds the FAB's folder as the job's `working_dir`, which Ray uploads to the
cluster and puts first on every worker's PYTHONPATH. Flower is not patched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

APPS = "apps"  # flwr.common.constant.APP_DIR: FABs are unpacked in $FLWR_HOME/apps/


class NoFabFolder(RuntimeError):
    """ray.init was called where no FAB is loaded: nothing to ship, and running workers on
    an image's copy of the app is exactly what this hook is for preventing."""


def fab_folder(path: list[str], flwr_home: Path) -> Path:
    """The one FAB folder on the driver's sys.path (Flower inserts it to load the apps)."""
    apps = (flwr_home / APPS).resolve()
    found = list(dict.fromkeys(Path(p).resolve() for p in path if p and Path(p).resolve().parent == apps))
    if len(found) != 1:
        raise NoFabFolder(f"RAY_RUNTIME_ENV_HOOK expects the ray.init of one Flower run, with its FAB's folder "
                          f"(under {apps}) on sys.path; found {len(found)}: {[str(f) for f in found]}")
    return found[0]


def ship_fab(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    env = dict(runtime_env or {})
    if "working_dir" in env:
        raise NoFabFolder(f"the runtime_env already has a working_dir ({env['working_dir']!r}): "
                          "unset RAY_RUNTIME_ENV_HOOK to keep it")
    flwr_home = Path(os.getenv("FLWR_HOME") or Path.home() / ".flwr")
    env["working_dir"] = str(fab_folder(sys.path, flwr_home))
    from flowerdock_logging import get_logger  # the images' logging; imported only when a run starts Ray

    get_logger("app.ray").info("ray_fab_shipped", working_dir=env["working_dir"],
                               address=os.getenv("RAY_ADDRESS"))
    return env
