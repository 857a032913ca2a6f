"""Whose key files are. Run as root (sudo, or in a container), key files are given to the
users that read them in the containers, not left to root (which no container runs as)."""

from __future__ import annotations

import os

from certlib.messages import CertError

CONTAINER_UID = 49999  # the `flwr` user of every image (and of ClientApp code)
# A SuperNode's key belongs to another user, the one its Flower daemon runs as: the
# ClientApps beside it (uid 49999, running whatever code a run ships) cannot read it
# (docker/supernode_entrypoint.py).
SUPERNODE_UID = 49998

Owner = tuple[int, int]


def parse_owner(flag: str, value: str | None) -> Owner | None:
    if not value:
        return None
    uid, _, gid = value.partition(":")
    if not (uid.isdigit() and (gid or uid).isdigit()):
        raise CertError(f"bad {flag} {value!r}: write uid:gid in numbers, e.g. 49999:49999")
    return int(uid), int(gid or uid)


def key_owners(owner: str | None, node_owner: str | None) -> tuple[Owner | None, Owner | None]:
    """(key files, SuperNode keys): --owner and --node-owner, else the containers' uids when run
    as root, else None: a user's own run keeps its files (only root may give them away)."""
    as_root = os.getuid() == 0
    return (parse_owner("--owner", owner) or ((CONTAINER_UID,) * 2 if as_root else None),
            parse_owner("--node-owner", node_owner) or ((SUPERNODE_UID,) * 2 if as_root else None))
