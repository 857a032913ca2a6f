"""One fake node: Flower's SuperNode loop on Flower's own Fleet client (flwr 1.42,
`flwr.supernode.fleet_http_connection.http_request_response`), every HTTP request timed, with the
fake ClientApp (replies.py) inline; and what a process of many such nodes needs that one
SuperNode does not."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from functools import partial

from flwr.app import Message
from flwr.common.config import get_fused_config_from_fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree, no_object_id_recompute
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree, push_objects
from flwr.supercore.run import RunNotRunningException
from flwr.supernode import fleet_http_connection
from flwr.supernode.fleet_http_client import FleetHttpClient

from .keys import _load_key
from .records import record
from .replies import reply_to
from .settings import Settings


class MeteredFleetHttpClient(FleetHttpClient):
    """Flower's Fleet client, timing every HTTP request and noting its outcome (a status
    code, or the exception's class): Flower's retries hide them from the caller."""

    def _send(self, context, *, stream=False):
        start, path = time.monotonic(), context.request.url.path.rsplit("/", 1)[-1]
        try:
            response = super()._send(context, stream=stream)
        except Exception as exc:
            record("http", path, time.monotonic() - start, type(exc).__name__)
            raise
        record("http", path, time.monotonic() - start, str(response.status_code) if response.is_error else "ok")
        return response


class NodeStartFailed(Exception):
    """A node that could not activate, where Flower would end the whole process (flwr_exit)."""

    @classmethod
    def instead_of_exit(cls, code: int, message: str | None = None, *_, **__):
        raise cls(f"exit code {code}: {message}")


def _prepare_process() -> None:
    """What one process of many nodes needs that one SuperNode does not. Flower's client ends
    the process on a failed activation (flwr_exit, os._exit after a timer) and signals itself
    SIGINT on a 401; here either would take every node of the process with it, so a failed
    activation raises for its node alone, and a 401 is counted, not obeyed."""
    fleet_http_connection.FleetHttpClient = MeteredFleetHttpClient
    fleet_http_connection.flwr_exit = NodeStartFailed.instead_of_exit
    signal.signal(signal.SIGINT, lambda *_: record("failure", -1, "sigint_from_flower", "a 401 (key refused)"))
    os.setsid()  # a Ctrl-C at the terminal is the parent's to act on (it stops us), not a 401 here
    logging.getLogger("flwr").setLevel(logging.ERROR)  # retries are counted; N nodes' lines would drown


def run_node(index: int, key_file: str | None, settings: Settings, stop: threading.Event) -> None:
    keys = _load_key(key_file) if key_file else None
    while not stop.is_set():
        start = time.monotonic()
        try:
            with fleet_http_connection.http_request_response(
                    settings.superlink, settings.root_certificates is None, settings.root_certificates, keys,
                    None, settings.max_wait_time) as connection:
                record("activate", index, time.monotonic() - start)
                fleet = connection[1:]  # receive, send, get_run, get_fab, pull_object, push_object, confirm
                stop.wait(settings.idle_sleep * (index % 97) / 97)  # spread the nodes' pulls over the sleep
                _loop(index, fleet, settings, stop)
        except Exception as exc:  # activation failed: Flower's SuperNode exits for good (flwr_exit)
            record("failure", index, "activate", f"{type(exc).__name__}: {exc}"[:300])
            return
        stop.wait(settings.restart_delay)  # a SuperNode that exited: its supervisor (Docker) starts it again


def _loop(index: int, fleet: tuple, settings: Settings, stop: threading.Event) -> None:
    """Flower's SuperNode loop (start_client_internal). Where Flower's SuperNode ends (an error it does
    not retry, such as a 500, on pull-messages, get-run or get-fab), this returns, and run_node
    deactivates the node and starts it again, as a restart policy would."""
    receive, runs = fleet[0], {}
    while not stop.is_set():
        start = time.monotonic()
        try:
            got = receive()
            record("pull", index, time.monotonic() - start, got is not None)
            if got is not None and (run_id := got[0].metadata.run_id) not in runs:
                runs[run_id] = _run_config(fleet, run_id)
        except RunNotRunningException:  # Flower ignores the message
            continue
        except Exception as exc:  # Flower retried what it retries (502-504, timeouts); the node ends here
            record("failure", index, "exit", f"{type(exc).__name__}: {exc}"[:300])
            return
        if got is None:
            stop.wait(settings.idle_sleep)
            continue
        try:
            _answer(index, *got, fleet, runs[got[0].metadata.run_id], settings)
        except RunNotRunningException:
            record("failure", index, "run_not_running", "")
        except Exception as exc:  # Flower logs it and goes on: this reply is lost
            record("failure", index, "message", f"{type(exc).__name__}: {exc}"[:300])


def _run_config(fleet: tuple, run_id: int) -> dict:
    """Once per run, as Flower's SuperNode: the run, its FAB, and the run config they make."""
    get_run, get_fab = fleet[2], fleet[3]
    run = get_run(run_id)
    return dict(get_fused_config_from_fab(get_fab(run.fab_hash, run_id).content, run))


def _answer(index: int, message: Message, tree, fleet: tuple, config: dict, settings: Settings) -> None:
    """What Flower's SuperNode and its ClientApp do with one message, against the SuperLink."""
    _, send, _, _, pull_object, push_object, confirm = fleet
    run_id, start = message.metadata.run_id, time.monotonic()
    msg = pull_and_inflate_object_from_tree(tree, partial(pull_object, run_id), partial(confirm, run_id),
                                            return_type=Message)
    msg.metadata.__dict__["_message_id"] = tree.object_id  # as Flower's ClientApp runner does
    reply = reply_to(msg, config, index, settings, time.monotonic() - start)
    reply.metadata.__dict__["_message_id"] = reply.object_id
    with no_object_id_recompute():
        reply_tree = get_object_tree(reply)
        to_push, session = send(reply, reply_tree, time.monotonic() - start)
        push_objects(get_all_nested_objects(reply), partial(push_object, run_id, session),
                     object_ids_to_push=to_push)
    record("reply", index, message.metadata.message_type.split(".")[0], time.monotonic() - start)
