"""Checks a SuperNode's own data folder at start, and again whenever it changes.

A folder that cannot be used does not stop the container (a restart would not fix
a file, and would only loop): the SuperNode starts anyway, logs one
`site_data_invalid` line naming the file and the problem, and reports unhealthy
until the folder is fixed; meanwhile its ClientApps reply `failed` with the same
reason, which the server logs per round. Once the folder is fixed, it logs
`site_data_valid` and is healthy again, with no restart.

What is checked before a run names a model: the folder and files, the formats,
sample counts, finite features, whole-number labels; and, against MODEL_FEATURES and
NUM_CLASSES (default: the shipped models' 64 features and 10 classes; `any` to
skip), the feature count and the label range. Each ClientApp checks again against
its run's model, with the run's own code (its FAB): this check uses the image's copy of
the app, and each line says which version that is (`checked_with_app`).

Run as a process of its own (docker/supernode_processes.py), as the user the
ClientApps run as, so that it sees the folder with their permissions:

  site_data_watch.py FOLDER LABEL_COLUMN STATE_FILE

It writes {"problem": ... or null} to STATE_FILE after every check (the health
probe reads it), and exits 2 on a setting it cannot use.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from app import models
from flowerdock_logging import get_logger
from app.site_data import SiteDataError, fingerprint, load_site

log = get_logger("app.entrypoint")
RECHECK_SECONDS = 10


def image_app_version() -> str:
    """The version of the app installed in this image: the code this check runs."""
    try:
        return importlib.metadata.version("flowerdock")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def expected(name: str, default: int) -> int | None:
    raw = os.getenv(name, "").strip() or str(default)
    if raw == "any":
        return None
    if not raw.isdigit():
        raise ValueError(f"{name}={raw!r} is not a whole number or 'any'")
    return int(raw)


class SiteDataWatch:
    """The folder's state: `problem` is None while it is usable."""

    def __init__(self, folder: Path, label_column: str, on_change: Callable[[str | None], None]) -> None:
        self.folder, self.label_column, self.on_change = folder, label_column, on_change
        self.features = expected("MODEL_FEATURES", models.CONFIG_DEFAULTS["num-features"])
        self.num_classes = expected("NUM_CLASSES", models.CONFIG_DEFAULTS["num-classes"])
        self.problem: str | None = None
        self.seen: tuple | None = None
        self.checked_with = image_app_version()

    def check(self) -> str | None:
        """Check the folder now, log what it found (a problem only when it is new), report it."""
        self.seen = fingerprint(self.folder)
        try:
            site = load_site(self.folder, self.features, self.num_classes, self.label_column)
        except SiteDataError as exc:
            problem = f"{exc} ({exc.detail})" if exc.detail else str(exc)  # on this site only
            if problem != self.problem:
                log.error("site_data_invalid", path=str(exc.path), problem=exc.problem, detail=exc.detail,
                          checked_with_app=self.checked_with,
                          hint="fix the file on this site's disk; the node is unhealthy and its replies "
                               "fail until then, and is checked again when the folder changes")
        else:
            problem = None
            log.info("site_data_valid", path=str(self.folder), train_examples=len(site.train.y),
                     validation_examples=len(site.validation.y), features=int(site.train.x.shape[1]),
                     checked_with_app=self.checked_with)
        self.problem = problem
        self.on_change(problem)
        return problem

    def watch(self) -> None:
        """Check again whenever the folder changes, until the process ends."""
        while True:
            time.sleep(RECHECK_SECONDS)
            if fingerprint(self.folder) != self.seen:
                self.check()


def write_state(path: Path, problem: str | None) -> None:
    """Whole or not at all: the probe may read it at any moment."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"problem": problem}))
    temporary.replace(path)


def main(argv: list[str]) -> int:
    folder, label_column, state = Path(argv[0]), argv[1], Path(argv[2])
    try:
        watch = SiteDataWatch(folder, label_column, lambda problem: write_state(state, problem))
    except ValueError as exc:
        log.error("supernode_config_invalid", error=str(exc))
        return 2
    watch.check()
    watch.watch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
