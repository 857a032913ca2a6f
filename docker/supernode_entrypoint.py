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
debugging only) no certificate or key is used.

Then it watches Flower. Flower 1.42's HTTP retry gives up for good on any error
that mentions SSL/TLS (a SuperLink restarted mid-handshake, a certificate
rotation) or once its retries run out; the SuperNode's loop then ends while the
process lives on, silent. This process passes Flower's lines through, and on
either sign it stops Flower and exits 1, so the restart policy starts a fresh
SuperNode that rejoins with the same key. It also writes what the health probe
needs to reach the SuperLink (healthcheck.py `supernode://`).

Beside Flower, it starts the fork server that gives ClientApps a warm start
(docker/clientapp_forkserver.py; CLIENTAPP_FORKSERVER=off for none), and keeps
it running.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from flowerdock_logging import get_logger

log = get_logger("app.entrypoint")


class ConfigError(Exception):
    """A setting that cannot work; the message says what to fix."""


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
    for path, what in ((ca, "the federation's CA certificate"), (key, "this SuperNode's private key")):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path} ({exc.strerror}): mount the folder that "
                              "certs/make-certs.sh made for this node (ca.crt, supernode.key) there, "
                              "readable by uid 49999") from exc
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
    return ["--superlink", address, "--root-certificates", str(ca),
            "--auth-supernode-private-key", str(key), *args]


# What Flower logs when its Fleet loop has given up for good (flwr/supercore/retry/http_retry.py).
GAVE_UP = ("SSL/TLS handshake error detected", "Giving up reconnection")
# What it logs when the SuperLink refuses to activate this node's key.
NOT_ACTIVATED = b"Failed to activate SuperNode"
HEALTH_FILE = Path("/tmp/flowerdock-supernode.json")


class HealthTarget:
    """What the health probe reads (healthcheck.py `supernode://`): where the SuperLink
    is, the CA that verifies it, and what is wrong with this site's data, if anything."""

    def __init__(self, arguments: list[str]) -> None:
        ca = arguments[arguments.index("--root-certificates") + 1] if "--root-certificates" in arguments else None
        self.state = {"superlink": os.environ["SUPERLINK"], "ca": ca, "site_data_error": None}
        self.lock = threading.Lock()
        self.write()

    def site_data(self, problem: str | None) -> None:
        self.state["site_data_error"] = problem
        self.write()

    def write(self) -> None:
        with self.lock:  # whole or not at all: the probe may read it at any moment
            temporary = HEALTH_FILE.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.state))
            temporary.replace(HEALTH_FILE)


def supervise(command: list[str]) -> int:
    """Run Flower, pass its lines through, and end it when its loop has given up.

    Flower runs in a process group of its own: when it ends, its children (the
    SuperExec, a ClientApp mid-round) would otherwise live on, retrying a Runtime
    API that is gone, and keep the container up but useless.
    """
    flower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: flower.send_signal(number))
    gave_up, not_activated = threading.Event(), threading.Event()

    def pass_lines_through() -> None:
        for raw in flower.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            if NOT_ACTIVATED in raw:
                not_activated.set()
            if not gave_up.is_set() and any(sign.encode() in raw for sign in GAVE_UP):
                gave_up.set()
                log.error("supernode_lost_superlink", superlink=os.environ["SUPERLINK"],
                          reason=raw.decode(errors="replace").strip()[:300],
                          hint="Flower gave up on the SuperLink: restarting this SuperNode (restart policy)")
                flower.terminate()

    reader = threading.Thread(target=pass_lines_through, daemon=True)
    reader.start()
    code = flower.wait()
    try:
        os.killpg(flower.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass
    reader.join(timeout=5)
    code = code if code >= 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
    if gave_up.is_set():
        return 1
    if not_activated.is_set():
        log.error("supernode_not_activated", exit_code=code,
                  hint="the SuperLink refused this node's key: either it is not registered, or the "
                       "SuperLink still holds this node's previous session (a crash less than a minute "
                       "ago: the session expires after two missed heartbeats, 60 s); the restart policy "
                       "tries again")
    elif code != 0:
        log.error("supernode_exited", exit_code=code, hint="the restart policy starts it again")
    return code


class ForkServer:
    """The fork server behind the image's warm `flwr-clientapp`, restarted if it dies.

    Without it, the launcher starts Flower's own executable: a ClientApp then pays
    its imports again (seconds), nothing else changes.
    """

    SCRIPT = Path(__file__).with_name("clientapp_forkserver.py")
    SOCKET = Path(os.getenv("CLIENTAPP_FORKSERVER_SOCKET", "/tmp/flowerdock-clientapp.sock"))
    STARTING = SOCKET.with_name(SOCKET.name + ".starting")  # launchers wait while it exists

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.stopping = False

    def start(self) -> None:
        """Beside Flower, not before it: its imports take seconds, and the first
        message comes later; a launcher that finds it still starting waits for it."""
        self._spawn()
        threading.Thread(target=self._keep_running, daemon=True).start()

    def _spawn(self) -> None:
        self.STARTING.touch()  # the server removes it once it serves
        # A session of its own: stopping it ends the ClientApps it forked, too.
        self.process = subprocess.Popen([sys.executable, str(self.SCRIPT), "--socket", str(self.SOCKET)],
                                        start_new_session=True)

    def _keep_running(self) -> None:
        while True:
            code = self.process.wait()
            self.STARTING.unlink(missing_ok=True)
            if self.stopping:
                return
            log.error("forkserver_exited", exit_code=code, hint="restarting it; meanwhile ClientApps start cold")
            time.sleep(1)
            if self.stopping:
                return
            self._spawn()

    def stop(self) -> None:
        self.stopping = True
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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


def watch_site_data(node_config: dict, health: HealthTarget) -> None:
    from site_data_watch import SiteDataWatch  # beside this file; imports numpy, so only when used

    try:
        watch = SiteDataWatch(Path(node_config["data-path"]), node_config["label-column"], health.site_data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    watch.start()


def main() -> None:
    try:
        node_config, replica = data_node_config() if os.getenv("DATA_PATH") else partition_node_config()
        arguments = flower_arguments(sys.argv[1:], replica)
        health = HealthTarget(arguments)
        if "data-path" in node_config:
            watch_site_data(node_config, health)
    except ConfigError as exc:
        log.error("supernode_config_invalid", error=str(exc))
        sys.exit(2)
    log.info("supernode_starting", **{key.replace("-", "_"): value for key, value in node_config.items()},
             superlink=os.environ["SUPERLINK"], tls="--insecure" not in arguments)
    command = ["flower-supernode", "--isolation", "subprocess",
               "--node-config", as_flower_node_config(node_config), *arguments]
    fork_server = ForkServer()
    if os.getenv("CLIENTAPP_FORKSERVER", "on").lower() != "off":
        fork_server.start()
    try:
        code = supervise(command)
    finally:
        fork_server.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
