"""A file or folder it cannot use, as one line instead of a traceback: which, whose, and the
fix. The usual cause: one step run with sudo (files given to root or the containers' uids),
the next without."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from certlib.messages import CertError
from certlib.owners import CONTAINER_UID


def owner_of(path: Path) -> tuple[Path, int]:
    """The path, or the nearest folder above it that exists and can be looked at, and its owner."""
    for candidate in (path, *path.parents):
        try:
            return candidate, candidate.stat().st_uid
        except OSError:
            continue
    return path, -1


def cannot(exc: OSError, verb: str, target: Path, root: Path, shown: Callable[[Path], str]) -> CertError:
    """The error for `verb`ing target under the output folder root; shown writes a path for the operator."""
    what = f"cannot {verb} {shown(target)}"
    if isinstance(exc, FileNotFoundError):
        return CertError(f"{what}: {shown(exc.filename or target)} does not exist")
    if exc.errno not in (errno.EACCES, errno.EPERM) or os.getuid() == 0:
        return CertError(f"{what}: {exc.strerror or exc}")
    # Whose it is: the folder written into (a write replaces the file), or what refused the read.
    blocker, owner = owner_of(target.parent if verb == "write" else Path(exc.filename or target))
    fix = how_to_fix(owner, blocker, root, shown)
    return CertError(f"{what}: permission denied; {shown(blocker)} belongs to uid {owner} "
                     f"and this runs as uid {os.getuid()} - {fix}")


def how_to_fix(owner: int, blocker: Path, root: Path, shown: Callable[[Path], str]) -> str:
    me = os.getuid()
    if owner == me:
        return f"it is yours but its mode forbids it: chmod -R u+rwX {shown(root)}"
    if not blocker.is_relative_to(root):
        return f"choose another --out, or make it yours: sudo install -d -o {me} {shown(root)}"
    # Run as root, the tool gives key files to the containers' uid: sudo made those too.
    made_by = "with sudo: use sudo again" if owner in (0, CONTAINER_UID) else f"as uid {owner}: run as that user"
    return (f"run every make_certs step as the same user (these files were made {made_by}), "
            f"or fix ownership with: sudo chown -R {me} {shown(root)}")
