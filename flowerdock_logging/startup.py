"""What `flowerdock_logging.pth`, installed next to this package, runs when any
Python process of the environment starts: Flower's daemons and the processes
they spawn print JSON from their first line.

This package is not `app`: importing it leaves the `app` package unimported, so
Flower loads the app of the submitted run (from its FAB), not an installed copy.
"""

from __future__ import annotations

import os

from flowerdock_logging.config import configure_logging, get_logger
from flowerdock_logging.streams import USER_TOOLS, guard_program_output, program


def install_startup_hook() -> None:
    if os.getenv("LOG_FORMAT", "json").lower() == "off" or program() in USER_TOOLS:
        return
    try:
        configure_logging()
    except ValueError as exc:  # a bad LOG_FORMAT/LOG_LEVEL: say what to fix, carry on with defaults
        configure_logging("json", "INFO")
        get_logger("flowerdock_logging").error("logging_config_invalid", error=str(exc))
    guard_program_output()
