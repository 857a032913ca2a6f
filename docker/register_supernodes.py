"""Registers every SuperNode public key in /certs/server/supernodes/ with the SuperLink.

SuperNode authentication (`--enable-supernode-auth`) lets a SuperNode in only if
its public key was registered first, through the Control API. This one-shot
service does that for every `<name>.pub` that certs/make-certs.sh put in the
server's folder; a key registered before is left as it is, so it is safe to run
again after adding nodes:

  docker compose -f docker/compose.server.yaml run --rm register-supernodes

  KEYS_DIR         where the public keys are (default /certs/server/supernodes)
  FLWR_CONNECTION  connection name in $FLWR_HOME/config.toml (default "deployment")
"""

import os
import sys
from pathlib import Path

from flowerdock_logging import get_logger
from submit import flwr_json, prepare_flwr_home

log = get_logger("app.register")
ALREADY_REGISTERED = "Public key already in use"


def main() -> int:
    prepare_flwr_home()
    keys = sorted(Path(os.getenv("KEYS_DIR", "/certs/server/supernodes")).glob("*.pub"))
    connection = os.getenv("FLWR_CONNECTION", "deployment")
    if not keys:
        log.warning("supernode_keys_missing", hint="no *.pub files: no SuperNode can join "
                    "(certs/make-certs.sh node <name> makes one)")
    failed = 0
    for key in keys:
        reply = flwr_json("supernode", "register", str(key), connection)
        if reply.get("success"):
            log.info("supernode_registered", key=key.name, node_id=reply.get("node-id"))
        elif ALREADY_REGISTERED in str(reply.get("error-message", "")):
            log.info("supernode_already_registered", key=key.name)
        else:
            failed += 1
            log.error("supernode_register_failed", key=key.name, error=reply.get("error-message", reply))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        log.error("supernode_register_failed", error=str(exc))
        sys.exit(1)
