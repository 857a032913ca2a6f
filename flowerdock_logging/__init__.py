"""JSON Lines from every process of the project: our events (structlog), Flower's
and uvicorn's records, and anything else a Flower program prints.

  config.py            configure_logging(), get_logger()
  render.py            how an event becomes a line (JSON or console)
  streams.py           stdout/stderr of Flower's programs kept to JSON Lines
  flower_hooks.py      Flower's and uvicorn's handlers taken over on import
  superexec_output.py  a SuperExec passes its ServerApp's output to the container
  startup.py           run by flowerdock_logging.pth at every interpreter start
"""

from flowerdock_logging.config import configure_logging, get_logger
from flowerdock_logging.render import LOG_SCHEMA_VERSION
from flowerdock_logging.streams import guard_program_output

__all__ = ["LOG_SCHEMA_VERSION", "configure_logging", "get_logger", "guard_program_output"]
