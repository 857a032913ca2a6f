"""Starts a SuperNode on its own data or its partition of the bundled data, over
TLS, with its own key.

  SUPERLINK       the SuperLink's Fleet API as host:port; host must be a name the
                  SuperLink's certificate carries
  DATA_PATH       this site's own data folder, mounted read-only (node config
                  data-path; app/site_data.py); `{replica}` in it becomes the replica
                  number N. LABEL_COLUMN: a CSV's label column (default "label").
                  SHARE_LABEL_COUNTS=1: send the server the training set's label
                  counts each round (an opt-in: docs/site-data.md).
                  Checked at start and whenever it changes (site_data_watch.py).
                  Without it, the node trains on a partition of the bundled digits:
  PARTITION_ID    this node's partition. When unset: the replica number N that
                  Compose gave this container, minus one; N is found by asking the
                  Compose network's DNS which of "$REPLICA_NAME_PREFIX-1..." is us.
  NUM_PARTITIONS  how many partitions the data is split into (= SuperNodes).
  NODE_CERTS_DIR  the folder certs/make-certs.sh made for this node: ca.crt (to
                  verify the SuperLink) and supernode.key (to authenticate).
                  Default: /certs/supernode-<N> (compose.yaml's certs volume) for
                  replica N, else /certs (docker/compose.client.yaml mounts it there).

Before starting Flower, it checks what a person would otherwise find out from a
stream of retries: the files exist, the SuperLink's certificate is signed by the
CA and carries the name used, and the SuperLink speaks the same protocol. A
setting that cannot work stops the container (exit 2) with a line saying what to fix.

Arguments are passed on to flower-supernode; with `--insecure` (plaintext, for
debugging only) no certificate or key is used. With trusted-entities.yaml in the
node's folder (certs/make-certs.sh publisher), it runs signed apps only.

Then it watches Flower. Flower 1.42's HTTP retry gives up for good on any error
that mentions SSL/TLS (a SuperLink restarted mid-handshake, a certificate
rotation) or once its retries run out; the SuperNode's loop then ends while the
process lives on, silent. This process passes Flower's lines through, and on
either sign it stops Flower and exits 1, so the restart policy starts a fresh
SuperNode that rejoins with the same key. It also writes what the health probe
needs to reach the SuperLink (healthcheck.py `supernode://`).

Beside Flower, as another user that cannot read the node's key, it starts
Flower's SuperExec for ClientApps and the fork server that gives them a warm
start (docker/clientapp_forkserver.py; CLIENTAPP_FORKSERVER=off for none):
supernode_processes.py says who runs as whom, and why.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
from pathlib import Path

import supernode_processes as processes  # beside this file
from flowerdock_logging import flower_internals, get_logger
from supernode_processes import ConfigError

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


def partition(partitions: int) -> tuple[int, int | None]:
    """(partition id, replica number or None when PARTITION_ID is given)."""
    raw = os.getenv("PARTITION_ID", "")
    try:
        if raw:
            number, replica = int(raw), None
        else:
            replica = replica_number(partitions)
            number = replica - 1
    except (OSError, ValueError) as exc:
        raise ConfigError(f"PARTITION_ID is unset or not a number ({exc}): set PARTITION_ID") from exc
    if not 0 <= number < partitions:
        raise ConfigError(f"PARTITION_ID={number} is outside 0..{partitions - 1}: "
                          f"is NUM_PARTITIONS ({partitions}) the number of SuperNodes?")
    return number, replica


def node_files(replica: int | None) -> tuple[Path, Path]:
    default = f"/certs/supernode-{replica}" if replica else "/certs"
    folder = Path(os.getenv("NODE_CERTS_DIR") or default)
    ca, key = folder / "ca.crt", folder / "supernode.key"
    # The key is read by Flower, as its owner (supernode_processes.py): here, that it is there.
    for path, what, look in ((ca, "the federation's CA certificate", Path.read_bytes),
                             (key, "this SuperNode's private key", Path.stat)):
        try:
            look(path)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path} ({exc.strerror}): mount the folder that "
                              "certs/make-certs.sh made for this node (ca.crt, supernode.key) there, as it "
                              "made them (supernode.key belongs to uid 49998)") from exc
    return ca, key


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"SUPERLINK={address!r} is not host:port: set it to the SuperLink's "
                          "public address, e.g. flower.example.org:9092")
    return host.strip("[]"), int(port)


def check_tls(address: str, ca: Path) -> None:
    """Ask the SuperLink's /health over verified TLS; stop on what retries cannot fix."""
    host, port = split_address(address)
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
    except ssl.SSLCertVerificationError as exc:
        if "Hostname mismatch" in str(exc) or "IP address mismatch" in str(exc):
            raise ConfigError(f"the SuperLink's certificate is not valid for {host!r} ({exc.verify_message}): "
                              f"connect by a name the certificate carries, or make a server certificate "
                              f"with --san for {host}") from exc
        raise ConfigError(f"the SuperLink at {address} has a certificate this node does not trust "
                          f"({exc.verify_message}): {ca} must be the CA of this federation "
                          "(the ca.crt that certs/make-certs.sh made with the server certificate)") from exc
    except ssl.SSLError as exc:
        raise ConfigError(f"the SuperLink at {address} does not speak TLS ({exc.reason}): "
                          "check the port; plaintext is for debugging only (--insecure)") from exc
    except OSError as exc:  # down or not yet up: Flower's own retries handle that
        log.warning("superlink_unreachable", superlink=address, error=str(exc),
                    hint="starting anyway; the SuperNode retries")
    finally:
        connection.close()


def check_plaintext(address: str) -> None:
    """With --insecure, refuse a SuperLink that speaks TLS rather than retry forever."""
    host, port = split_address(address)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                speaks_tls = True
    except (ssl.SSLError, OSError):
        speaks_tls = False
    if speaks_tls:
        raise ConfigError(f"this SuperNode is in plaintext mode (--insecure) but the SuperLink at "
                          f"{address} requires TLS: remove --insecure and mount this node's certificates")


def flower_arguments(args: list[str], replica: int | None) -> list[str]:
    address = os.getenv("SUPERLINK", "")
    if not address:
        raise ConfigError("SUPERLINK is unset: set it to the SuperLink's address as host:port")
    if "--insecure" in args:
        log.warning("supernode_plaintext", superlink=address, hint="for debugging only")
        check_plaintext(address)
        return ["--superlink", address, *args]
    ca, key = node_files(replica)
    check_tls(address, ca)
    # Signed apps only, once certs/make-certs.sh publisher put the publisher's key beside this
    # node's (docs/signed-apps.md): Flower then refuses any FAB it cannot verify.
    trusted = key.with_name("trusted-entities.yaml")
    signed_only = ["--trusted-entities", str(trusted)] if trusted.is_file() else []
    return ["--superlink", address, "--root-certificates", str(ca),
            "--auth-supernode-private-key", str(key), *signed_only, *args]


HEALTH_FILE = Path("/tmp/flowerdock-supernode.json")


class HealthTarget:
    """What the health probe reads (healthcheck.py `supernode://`): where the SuperLink
    is, the CA that verifies it, and where the site-data check writes what it found."""

    def __init__(self, arguments: list[str], site_data: bool) -> None:
        ca = arguments[arguments.index("--root-certificates") + 1] if "--root-certificates" in arguments else None
        state = {"superlink": os.environ["SUPERLINK"], "ca": ca,
                 "site_data_state": str(processes.SITE_DATA_STATE) if site_data else None}
        temporary = HEALTH_FILE.with_suffix(".tmp")  # whole or not at all: the probe may read it any time
        temporary.write_text(json.dumps(state))
        temporary.replace(HEALTH_FILE)


def number_of_partitions() -> int:
    try:
        return int(os.environ["NUM_PARTITIONS"])
    except (KeyError, ValueError):
        raise ConfigError("set NUM_PARTITIONS to the number of SuperNodes in the federation (a whole number), "
                          "or DATA_PATH to this site's own data folder")


def data_node_config() -> tuple[dict, int | None]:
    """(node config, replica) for a node on its own data folder (DATA_PATH)."""
    replica = None
    if os.getenv("REPLICA_NAME_PREFIX"):  # compose.yaml: replica N has key N (and folder N)
        try:
            replica = replica_number(number_of_partitions())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot tell which replica this is ({exc})") from exc
    folder = os.environ["DATA_PATH"].replace("{replica}", str(replica))
    config = {"data-path": folder, "label-column": os.getenv("LABEL_COLUMN") or "label"}
    if os.getenv("SHARE_LABEL_COUNTS", "").lower() in ("1", "true", "yes"):  # an opt-in (docs/site-data.md)
        config["share-label-counts"] = True
    return config, replica


def partition_node_config() -> tuple[dict, int | None]:
    """(node config, replica) for a node on its partition of the bundled digits."""
    partitions = number_of_partitions()
    number, replica = partition(partitions)
    return {"partition-id": number, "num-partitions": partitions}, replica


def as_flower_node_config(config: dict) -> str:
    """Flower parses each value as TOML: strings quoted, numbers bare."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in config.items())


def main() -> None:
    flower_internals.require("docker/supernode_")  # the Flower lines and defaults it relies on; imports no Flower
    try:
        node_config, replica = data_node_config() if os.getenv("DATA_PATH") else partition_node_config()
        arguments = flower_arguments(sys.argv[1:], replica)
        key = arguments[arguments.index("--auth-supernode-private-key") + 1] if "--insecure" not in arguments else None
        daemon = processes.daemon_uid(Path(key) if key else None)
        HealthTarget(arguments, site_data="data-path" in node_config)
        helpers = [processes.site_data_watch(node_config["data-path"], node_config["label-column"])] \
            if "data-path" in node_config else []
    except ConfigError as exc:
        log.error("supernode_config_invalid", error=str(exc))
        sys.exit(2)
    log.info("supernode_starting", **{key.replace("-", "_"): value for key, value in node_config.items()},
             superlink=os.environ["SUPERLINK"], tls="--insecure" not in arguments,
             signed_apps_only="--trusted-entities" in arguments,
             daemon_uid=daemon if daemon is not None else os.getuid(), clientapp_uid=processes.CLIENTAPP_UID
             if processes.separated() else os.getuid())
    command = ["flower-supernode", "--isolation", "process", "--node-config", as_flower_node_config(node_config),
               *arguments]

    def start_clientapp_side() -> None:  # once Flower serves (or soon will) its Runtime API
        if os.getenv("CLIENTAPP_FORKSERVER", "on").lower() != "off":
            helpers.append(processes.ForkServer().start())
        helpers.append(processes.superexec().start())

    try:
        code = processes.supervise(command, daemon, on_start=start_clientapp_side)
    finally:
        for helper in helpers:
            helper.stop()
    sys.exit(1 if processes.Child.failed.is_set() and code == 0 else code)


if __name__ == "__main__":
    main()
