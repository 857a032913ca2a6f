"""Brings the SuperLink's list of SuperNode keys in line with the server folder.

SuperNode authentication (`--enable-supernode-auth`) lets a SuperNode in only if
its public key is registered. This one-shot registers every key in
/certs/server/supernodes/ (certs/make-certs.sh puts them there) and unregisters
every node whose key is in /certs/server/revoked/ (`certs/make-certs.sh revoke
NAME` moves it there): a revoked node is refused at its next request while the
others go on. Safe to run again at any time; each change is one JSON line.

  docker compose -f docker/compose.server.yaml run --rm register-supernodes

  KEYS_DIR         the keys to register (default /certs/server/supernodes)
  REVOKED_DIR      the keys to throw out (default /certs/server/revoked)
  FLWR_CONNECTION  connection name in $FLWR_HOME/config.toml (default "deployment")

Flower's CLI lists nodes without their keys, so this asks the Control API with
Flower's own client (flwr 1.42), which returns them.
"""

import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest, UnregisterNodeRequest
from flwr.supercore.constant import NodeStatus
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from flowerdock_logging import get_logger
from flowerdock_logging.streams import JsonLinesGuard
from submit import prepare_flwr_home

log = get_logger("app.register")


def public_keys(folder: Path) -> dict[bytes, str]:
    """{key as Flower stores it: file name} for every *.pub in the folder (none if it is absent)."""
    keys = {}
    for path in sorted(folder.glob("*.pub")):
        try:
            key = serialization.load_ssh_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{path} is not an OpenSSH public key ({exc}): remake it with "
                               "certs/make-certs.sh node <name>") from exc
        keys[public_key_to_bytes(key)] = path.stem
    return keys


def sync(control, wanted: dict[bytes, str], revoked: dict[bytes, str]) -> int:
    """Register what is wanted and not yet there, unregister what is revoked; failures counted."""
    registered = {node.public_key: node for node in control.ListNodes(ListNodesRequest()).nodes_info
                  if node.status != NodeStatus.UNREGISTERED}
    failed = 0
    for key, name in revoked.items():
        if key in wanted:
            failed += 1
            log.error("supernode_key_conflict", key=name, hint=f"{name}.pub is both in supernodes/ and "
                      "revoked/: remove it from supernodes/ (certs/make-certs.sh revoke does)")
        elif key in registered:
            control.UnregisterNode(UnregisterNodeRequest(node_id=registered[key].node_id))
            log.warning("supernode_revoked", key=name, node_id=str(registered[key].node_id))
    for key, name in wanted.items():
        if key in revoked:
            continue
        if key in registered:
            log.info("supernode_already_registered", key=name, node_id=str(registered[key].node_id))
            continue
        try:
            reply = control.RegisterNode(RegisterNodeRequest(public_key=key, name=name))
        except Exception as exc:  # Flower raises its own error types; each is one line here
            failed += 1
            log.error("supernode_register_failed", key=name, error=str(exc))
            continue
        log.info("supernode_registered", key=name, node_id=str(reply.node_id))
    return failed


def main() -> int:
    # Flower's client says which SuperLink it uses in a line of text: a JSON line here.
    sys.stdout = JsonLinesGuard(sys.stdout, "stdout")
    prepare_flwr_home()
    wanted = public_keys(Path(os.getenv("KEYS_DIR", "/certs/server/supernodes")))
    revoked = public_keys(Path(os.getenv("REVOKED_DIR", "/certs/server/revoked")))
    if not wanted:
        log.warning("supernode_keys_missing", hint="no *.pub files: no SuperNode can join "
                    "(certs/make-certs.sh node <name> makes one)")
    connection = read_superlink_connection(os.getenv("FLWR_CONNECTION", "deployment"))
    control = init_http_client_from_connection(connection)
    try:
        return 1 if sync(control, wanted, revoked) else 0
    finally:
        control.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the SuperLink unreachable, a bad key file: one line, exit 1
        log.error("supernode_register_failed", error=str(exc) or type(exc).__name__)
        sys.exit(1)
