"""FakeFleet: N fake nodes as threads spread over a few processes (spawned: no inherited threads
or locks), started over a ramp, stopped together; each process hands its records back."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

from flowerdock_logging import flower_internals

from . import records
from .node import _prepare_process, run_node
from .records import KINDS
from .settings import Settings


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
    results.put({kind: list(rows) for kind, rows in records.RECORDS.items()})


class FakeFleet:
    """N fake nodes over `processes` processes. keys: key files (one node each), or a number of
    nodes that register themselves."""

    def __init__(self, settings: Settings, keys: list[Path] | int, processes: int = 4) -> None:
        flower_internals.require("scripts/fake_fleet/")  # a Flower that moved them fails here, saying what
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
