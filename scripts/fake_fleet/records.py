"""One process's records: plain tuples, first field the wall-clock time.

Each process of a fleet has its own RECORDS (this module, imported in that process); FakeFleet.stop
gathers them. The rows by kind:

  activate  (time, node, seconds to activate)
  pull      (time, node, seconds, whether a message came)
  http      (time, path, seconds, "ok" or the status code or the exception's class)
  reply     (time, node, "train" or "evaluate", seconds from pull to pushed)
  failure   (time, node (-1: the process), where, what)
"""

from __future__ import annotations

import time

KINDS = ("activate", "pull", "http", "reply", "failure")

RECORDS: dict[str, list[tuple]] = {kind: [] for kind in KINDS}


def record(kind: str, *row) -> None:
    # No lock: list.append is atomic in CPython, and a signal handler records too (a lock held
    # by the thread it interrupts would deadlock it).
    RECORDS[kind].append((time.time(), *row))
