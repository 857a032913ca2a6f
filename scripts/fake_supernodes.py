"""Fake SuperNodes: load for a SuperLink, N nodes as threads spread over P processes.

Each node speaks Flower's real Fleet protocol through Flower's own client (flwr 1.42,
`flwr.supernode.fleet_http_connection.http_request_response`): activates with its own EC key
(or registers itself), heartbeats (Flower's HeartbeatSender), pulls as Flower's SuperNode loop
does (3 s sleep after an empty pull), fetches run and FAB once per run, pulls and confirms a
message's objects, pushes a reply and its objects. Only the ClientApp is fake: a train reply is
the received model plus a small step (a direction common to all nodes plus a tenth of it in
per-node noise, which screening's outlier and cosine checks accept), with the metrics and CBOR
metadata of the real ClientApp (app/client_app.py).

  python scripts/fake_supernodes.py keys --nodes 200 --out KEYS   # KEYS/fake-0001.key, .pub, ...
  (register KEYS/*.pub as a deployment does: docker/register_supernodes.py with KEYS_DIR=KEYS)
  python scripts/fake_supernodes.py run --superlink HOST:PORT --root-certificates ca.crt --keys KEYS \\
      --processes 4 --duration 300       # one JSON summary at the end

Without --keys, --nodes N nodes register themselves (for a SuperLink without
--enable-supernode-auth). Library: FakeFleet(settings, keys).start(), .stop() -> records;
summarize(records, since, until) -> the summary. scripts/local_fleet_check.py runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.config import get_fused_config_from_fab
from flwr.common.constant import ErrorCode
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree, no_object_id_recompute
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree, push_objects
from flwr.supercore.run import RunNotRunningException
from flwr.supernode import fleet_http_connection
from flwr.supernode.fleet_http_client import FleetHttpClient

from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record
from flowerdock_logging import flower_internals

# The metric names app/task.py declares (TRAIN_METRICS, EVALUATE_METRICS; tests hold them equal):
# not imported from there, because app.task imports torch, 300 MB in every process.
TRAIN_METRICS, EVALUATE_METRICS = ("train_loss",), ("eval_loss", "eval_acc")
WEIGHT_KEY = "num-examples"
KINDS = ("activate", "pull", "http", "reply", "failure")


@dataclass(frozen=True)
class Settings:
    superlink: str  # host:port of the Fleet API (the gateway's public port, or the SuperLink's)
    root_certificates: str | None = None  # CA file; None: plain HTTP (no node keys then)
    idle_sleep: float = 3.0  # after an empty pull: Flower's SuperNode sleeps 3 s
    ramp: float = 10.0  # nodes start spread over this many seconds, as real sites do not start at once
    step: float = 0.01  # the common step per weight; the per-node noise is a tenth of it
    examples: int = 100  # num-examples each reply declares
    max_wait_time: float | None = 300.0  # a node that cannot activate in this long gives up
    restart_delay: float = 5.0  # a node that ended (as Flower's SuperNode would) starts again after this


# --- one process's records: plain tuples, first field the wall-clock time -------------------

RECORDS: dict[str, list[tuple]] = {kind: [] for kind in KINDS}


def record(kind: str, *row) -> None:
    # No lock: list.append is atomic in CPython, and a signal handler records too (a lock held
    # by the thread it interrupts would deadlock it).
    RECORDS[kind].append((time.time(), *row))


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


# --- the fake ClientApp ---------------------------------------------------------------------

def _direction(seed: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(seed.encode())).standard_normal(shape)


def train_reply(msg: Message, config: dict, node: int, settings: Settings, seconds: float) -> Message:
    """The received arrays plus a step common to all nodes (by round and array name) and a
    tenth of it in per-node noise: every update about as far from the model as the others
    and pointing their way, as screening wants (app/screening.py, app/strategy.py)."""
    server_round = int(msg.content["config"]["server-round"])
    arrays = {}
    for name, array in msg.content["arrays"].items():
        value = array.numpy()
        if value.dtype.kind == "f":
            step = _direction(f"{server_round}/{name}", value.shape) + 0.1 * _direction(
                f"{server_round}/{name}/{node}", value.shape)
            value = (value + settings.step * step).astype(value.dtype)
        arrays[name] = Array(value)
    loss = 2.3 / (1 + 0.1 * server_round) + 0.01 * (node % 10)
    metrics = {"train_loss": loss}
    if config.get("one-exchange", True):  # the received model's evaluation rides along (app/server_app.py)
        metrics.update(eval_loss=loss * 1.05, eval_acc=min(0.99, 0.1 + 0.08 * server_round))
    name, meta = to_config_record(TrainProcessMetadata(
        training_time=seconds, converged=False, training_losses={"epoch_1": loss}, device="cpu"))
    content = RecordDict({"arrays": ArrayRecord(array_dict=arrays),
                          "metrics": MetricRecord({**metrics, WEIGHT_KEY: settings.examples}), name: meta})
    return Message(content, reply_to=msg)


def evaluate_reply(msg: Message, node: int, settings: Settings, seconds: float) -> Message:
    name, meta = to_config_record(EvaluateProcessMetadata(evaluation_time=seconds))
    metrics = {"eval_loss": 1.0 + 0.01 * (node % 10), "eval_acc": 0.5, WEIGHT_KEY: settings.examples}
    return Message(RecordDict({"metrics": MetricRecord(metrics), name: meta}), reply_to=msg)


def reply_to(msg: Message, config: dict, node: int, settings: Settings, seconds: float) -> Message:
    kind = msg.metadata.message_type.split(".")[0]  # "train", or "train.<name>" (Flower's form)
    if kind in ("train", "evaluate"):
        return (train_reply(msg, config, node, settings, seconds) if kind == "train"
                else evaluate_reply(msg, node, settings, seconds))
    return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"fake node: no {kind!r} handler"), reply_to=msg)


# --- one node: Flower's SuperNode loop, with the fake ClientApp inline ----------------------

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


# --- keys -----------------------------------------------------------------------------------

def make_keys(folder: Path, nodes: int) -> list[Path]:
    """fake-NNNN.key (OpenSSH private key, P-384, as certs/certlib/nodes.py makes them) and
    fake-NNNN.pub (what docker/register_supernodes.py registers)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, nodes + 1):
        key, path = ec.generate_private_key(ec.SECP384R1()), folder / f"fake-{n:04d}.key"
        path.touch(0o600)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + f" {path.stem}\n".encode())
    return [folder / f"fake-{n:04d}.key" for n in range(1, nodes + 1)]


def _load_key(path: str) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    key = serialization.load_ssh_private_key(Path(path).read_bytes(), None)  # as flower-supernode does
    return key, key.public_key()


# --- processes ------------------------------------------------------------------------------

def _process(nodes: list[tuple[int, str | None]], settings: Settings, stop, results) -> None:
    _prepare_process()
    halt, threads = threading.Event(), []
    for index, key_file in nodes:
        threads.append(threading.Thread(target=run_node, args=(index, key_file, settings, halt), daemon=True))
        threads[-1].start()
        if stop.wait(settings.ramp / max(len(nodes), 1)):
            break
    parent = os.getppid()
    while not stop.wait(2) and os.getppid() == parent:  # a parent that died without stopping us: stop too
        pass
    halt.set()
    deadline = time.monotonic() + 30  # each node deactivates itself on the way out, as a SuperNode does
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if os.getppid() != parent:
        results.cancel_join_thread()  # nobody reads the records: exit without waiting to hand them over
    results.put({kind: list(rows) for kind, rows in RECORDS.items()})


class FakeFleet:
    """N fake nodes over `processes` processes. keys: key files (one node each), or a number of
    nodes that register themselves."""

    def __init__(self, settings: Settings, keys: list[Path] | int, processes: int = 4) -> None:
        flower_internals.require("scripts/fake_supernodes.py")  # a Flower that moved them fails here, saying what
        keyed = isinstance(keys, list)
        nodes = [(i, str(k)) for i, k in enumerate(keys)] if keyed else [(i, None) for i in range(keys)]
        if nodes[0][1] and settings.root_certificates is None:
            raise ValueError("node keys need TLS (Flower refuses node authentication over plain HTTP): "
                             "give root_certificates")
        self.settings, self.nodes = settings, nodes
        self.processes = max(1, min(processes, len(nodes)))
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._stop, self._results, self._children = self._context.Event(), self._context.Queue(), []

    def start(self) -> FakeFleet:
        for p in range(self.processes):
            share = self.nodes[p::self.processes]  # every P-th node: each process gets the same mix
            child = self._context.Process(target=_process, daemon=True,
                                          args=(share, self.settings, self._stop, self._results))
            child.start()
            self._children.append(child)
        return self

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def stop(self, timeout: float = 60) -> dict[str, list[tuple]]:
        """Stop every node; every process's records, merged (a process that did not answer adds none)."""
        self._stop.set()
        merged: dict[str, list[tuple]] = {kind: [] for kind in KINDS}
        for _ in self._children:
            try:
                for kind, rows in self._results.get(timeout=timeout).items():
                    merged[kind].extend(rows)
            except Exception:  # queue.Empty: a process that hung; killed below
                break
        for child in self._children:
            child.join(5)
            if child.is_alive():
                child.kill()
        return merged


# --- the summary ----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(records: dict[str, list[tuple]], since: float = 0.0, until: float = math.inf) -> dict:
    """The JSON summary of records between two wall-clock times."""
    rows = {kind: [r for r in records[kind] if since <= r[0] <= until] for kind in KINDS}
    pulls = rows["pull"]
    idle = [r[2] for r in pulls if not r[3]]
    http_errors = Counter(f"{r[1]} {r[3]}" for r in rows["http"] if r[3] != "ok")
    return {
        "nodes_activated": len({r[1] for r in rows["activate"]}),
        "activation_s_p50": _round(percentile([r[2] for r in rows["activate"]], 50)),
        "pulls": len(pulls), "pulls_with_message": len(pulls) - len(idle),
        **{f"pull_latency_s_p{q}": _round(percentile([r[2] for r in pulls], q)) for q in (50, 95, 99)},
        **{f"idle_pull_latency_s_p{q}": _round(percentile(idle, q)) for q in (50, 95, 99)},
        "pull_latency_s_max": _round(max((r[2] for r in pulls), default=None)),
        "replies_pushed": dict(Counter(r[2] for r in rows["reply"])),
        **{f"reply_s_p{q}": _round(percentile([r[3] for r in rows["reply"]], q)) for q in (50, 99)},
        "http_requests": len(rows["http"]),
        "http_s_p50_p99_by_path": {path: [_round(percentile(times, 50)), _round(percentile(times, 99))]
                                   for path, times in sorted(_by_path(rows["http"]).items())},
        "errors_by_kind": dict(http_errors.most_common()),
        "heartbeat_failures": sum(n for kind, n in http_errors.items() if kind.startswith("send-node-heartbeat")),
        "node_failures": dict(Counter(r[2] for r in rows["failure"])),
        "node_failure_examples": sorted({r[3] for r in rows["failure"] if r[3]})[:5],
    }


def _by_path(http: list[tuple]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for row in http:
        times.setdefault(row[1], []).append(row[2])
    return times


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="make --nodes key pairs in --out")
    keys.add_argument("--nodes", type=int, required=True)
    keys.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("run", help="run fake nodes until --duration or Ctrl-C; print a JSON summary")
    run.add_argument("--superlink", required=True, help="host:port of the Fleet API")
    run.add_argument("--root-certificates", help="CA file for TLS; without it, plain HTTP")
    run.add_argument("--keys", type=Path, help="folder of fake-*.key files (registered); else self-registered")
    run.add_argument("--nodes", type=int, help="how many (default: every key in --keys)")
    run.add_argument("--processes", type=int, default=4)
    run.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C or SIGTERM)")
    run.add_argument("--idle-sleep", type=float, default=3.0)
    run.add_argument("--ramp", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "keys":
        make_keys(args.out, args.nodes)
        return
    chosen = sorted(args.keys.glob("fake-*.key"))[:args.nodes] if args.keys else args.nodes
    if not chosen:
        parser.error("give --keys with fake-*.key files, or --nodes")
    settings = Settings(args.superlink, args.root_certificates, idle_sleep=args.idle_sleep, ramp=args.ramp)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    fleet = FakeFleet(settings, chosen, args.processes).start()
    try:
        done.wait(args.duration or None)
    except KeyboardInterrupt:
        pass
    summary = {"nodes": len(fleet.nodes), "processes": fleet.processes, **summarize(fleet.stop())}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
