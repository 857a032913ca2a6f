"""A whole federation in one process: the real ServerApp and ClientApp, a direct transport.

`run(overrides, nodes=5)` runs app/server_app.py's `run` against a Grid that hands
each message to a ClientApp object of this process (the real app's, or the lying one
of tests/rogue_app) and keeps its reply; every strategy, screening, bounding and guard
step is the real one. What it leaves out is Flower's transport: no SuperLink, no Ray,
no serialisation. Replies are deep copies, as on the wire, so no ClientApp shares
objects with the server.

For measuring many configurations side by side (scripts/bench_faults.py) and for fast
tests of what the defaults do (tests/test_defences.py); the same attacks run on real
containers in tests/test_liars.py.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import sys
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "tests" / "rogue_app"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from app import run_config, server_app  # noqa: E402
from app.quorum import RunFailed  # noqa: E402


def default_run_config() -> dict:
    return {**run_config.defaults(), "attacks": ""}


class DirectGrid:
    """A Grid whose nodes are ClientApp objects of this process, answered at push time."""

    def __init__(self, client_app, run_config: dict, nodes: int) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1  # as a ServerApp is given
        self.client_app = client_app
        self.contexts = {node_id: Context(run_id=1, node_id=node_id, state=RecordDict(), run_config=run_config,
                                          node_config={"partition-id": node_id - 100, "num-partitions": nodes})
                         for node_id in range(100, 100 + nodes)}
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message_id = str(uuid.uuid4())
            received = copy.deepcopy(message)  # each node its own copy, as from the wire
            try:
                reply = self.client_app(received, self.contexts[message.metadata.dst_node_id])
            except Exception as exc:  # noqa: BLE001 - as Flower's SuperNode replies for a ClientApp that raised
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc)}:<'{exc}'>"),
                                reply_to=received)
            self.replies[message_id] = copy.deepcopy(reply)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(message_id) for message_id in list(message_ids) if message_id in self.replies]


class Events(logging.Handler):
    """Every structlog event of the `app` loggers, as the dict it would be logged as."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self.events.append({**record.msg, "level": record.levelname.lower()})


def run(overrides: dict, *, nodes: int = 5, client_app=None) -> tuple[list[dict], str | None]:
    """(every event of the run, the reason it failed or None) for the run config `overrides`."""
    if client_app is None:
        import rogue_client
        client_app = rogue_client.app
    config = {**default_run_config(), "poll-interval": 0.0, **overrides}
    grid = DirectGrid(client_app, config, nodes)
    events = Events()
    logger, flower = logging.getLogger("app"), logging.getLogger("flwr")
    logger.addHandler(events)
    logger.propagate, levels = False, (logger.level, flower.level)  # the events are kept here, not printed
    logger.setLevel(logging.INFO)
    flower.setLevel(logging.ERROR)
    os.environ.setdefault("APP_OUTPUT_DIR", tempfile.mkdtemp(prefix="flowerdock-direct-"))
    # Flower samples nodes with Python's global random, and the order replies are summed in moves
    # the figures by up to a point or two by round 4: every run here starts from the same state, so
    # two runs compared side by side differ by their settings, not by what ran before them.
    random.seed(int(config["seed"]))
    try:
        server_app.run(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
        failure = None
    except RunFailed as exc:
        failure = str(exc)
    finally:
        logger.removeHandler(events)
        logger.propagate = True
        logger.setLevel(levels[0])
        flower.setLevel(levels[1])
    return events.events, failure


def accuracy(events: list[dict]) -> float | None:
    """The last global evaluation's accuracy (the model the run ended with)."""
    found = [e["accuracy"] for e in events if e.get("event") == "global_evaluation"]
    return found[-1] if found else None
