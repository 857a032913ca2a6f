"""A SuperExec passes its ServerApp's output through to the container.

Flower's SuperExec sends a ServerApp's stdout to /dev/null (the ServerApp pushes
its logs to the SuperLink for `flwr log`). An operator's log aggregator reads the
containers, so the per-client lines must be there too. Applied when Flower's
module is imported (flower_hooks.AFTER_IMPORT): not a logging setting, but it is
what makes the ServerApp's lines reach the container's log at all.
"""

from __future__ import annotations

from types import ModuleType


def show_serverapp_output(module: ModuleType) -> None:
    from flowerdock_logging.flower_internals import require  # here, not at every interpreter start

    require("flowerdock_logging/superexec_output.py")  # a renamed flag would be set on nothing
    module.AutoExecPlugin.suppress_output = False
