"""Starts a SuperNode on its partition of the data.

  PARTITION_ID    this node's partition. When unset: the replica number N that
                  Compose gave this container, minus one; N is found by asking the
                  Compose network's DNS which of "$REPLICA_NAME_PREFIX-1..." is us.
  NUM_PARTITIONS  how many partitions the data is split into (= SuperNodes).

Any arguments are passed on to flower-supernode.
"""

import os
import socket
import sys

from app.logging import get_logger

log = get_logger("app.entrypoint")


def replica_number(replicas: int) -> int:
    prefix = os.environ.get("REPLICA_NAME_PREFIX")
    if not prefix:
        raise ValueError("REPLICA_NAME_PREFIX is unset")
    own_address = socket.gethostbyname(socket.gethostname())
    for number in range(1, replicas + 1):
        try:
            if own_address in socket.gethostbyname_ex(f"{prefix}-{number}")[2]:
                return number
        except OSError:  # no such container (yet)
            continue
    raise ValueError(f"no container {prefix}-1..{replicas} has this container's address {own_address}")


def fail(error: str) -> None:
    log.error("supernode_config_invalid", error=error)
    sys.exit(2)


def main() -> None:
    try:
        partitions = int(os.environ["NUM_PARTITIONS"])
    except (KeyError, ValueError):
        fail("set NUM_PARTITIONS to the number of SuperNodes in the federation (a whole number)")
    raw = os.getenv("PARTITION_ID", "")
    try:
        partition = int(raw) if raw else replica_number(partitions) - 1
    except (OSError, ValueError) as exc:
        fail(f"PARTITION_ID is unset or not a number ({exc}): set PARTITION_ID")
    if not 0 <= partition < partitions:
        fail(f"PARTITION_ID={partition} is outside 0..{partitions - 1}: is NUM_PARTITIONS ({partitions}) the number of SuperNodes?")
    log.info("supernode_starting", partition_id=partition, num_partitions=partitions)
    command = ["flower-supernode", "--isolation", "subprocess",
               "--node-config", f"partition-id={partition} num-partitions={partitions}", *sys.argv[1:]]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
