"""Runs one node of the simulation's Ray cluster (`ray start --block`), so that
everything it prints is JSON Lines.

  ray_node.py head [-- PROGRAM...]  the head: Ray's GCS; no CPUs, so no ClientApp runs here.
                                    With PROGRAM, the driver's node too (one machine's Ray node
                                    across hosts, docker/compose.ray-head.yaml)
  ray_node.py worker                a worker: RAY_NUM_CPUS ClientApps at a time (virtual SuperNodes)
  ray_node.py driver -- PROGRAM...  a node with no CPUs that runs PROGRAM once it has joined: the
                                    simulation SuperLink, whose `flwr-simulation` is the Ray driver
                                    (Ray attaches a driver to a raylet of its own host)

Settings (environment):
  RAY_HEAD_ADDRESS  worker, driver: the head's GCS as host:port (compose: ray-head:6379)
  RAY_NODE_IP       the address the other nodes reach this one at. Default: this
                    container's own (head), or the one that routes to the head.
                    With host networking (a worker on another machine): the host's.
  RAY_NUM_CPUS      worker: ClientApps at a time (default: Ray counts this container's
                    CPUs); each takes the federation config's client-resources-num-cpus
  RAY_NUM_GPUS      worker: GPUs offered (default: Ray counts them)
  RAY_OBJECT_STORE_MB  Ray's object store in /dev/shm, MiB (default 256; below shm_size)
  RAY_USE_TLS=1 with RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT:
                    Ray's mutual TLS, read by every Ray process of the node. The
                    certificate (certs/make-certs.sh ray) must name this node's IP.
  RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH: Ray's token authentication, too.

Ports, fixed so that a firewall can open them between the hosts (docs/ray.md):
GCS 6379 (head), Ray Client 10001 (head), node manager 6380, object manager 6381,
runtime-env agent 6382, dashboard agent 6383-6384, metrics 6385, workers 10002-10999.

A setting that cannot work stops the container with one line saying what to fix
(exit 2). `ray start` prints plain text: each line becomes a `ray_log` event.
Ray's own processes write to /tmp/ray/session_latest/logs. When Ray stops, so
does PROGRAM, and the reverse; the exit code is the one that stopped first.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from flowerdock_logging import get_logger

log = get_logger("app.ray_node")

ROLES = ("head", "worker", "driver")
GCS_PORT = 6379
PORTS = ["--node-manager-port", "6380", "--object-manager-port", "6381", "--runtime-env-agent-port", "6382",
         "--dashboard-agent-grpc-port", "6383", "--dashboard-agent-listen-port", "6384",
         "--metrics-export-port", "6385", "--min-worker-port", "10002", "--max-worker-port", "10999"]
TLS_FILES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
STARTED = "Ray runtime started."  # what `ray start` prints once the node has joined
START_TIMEOUT_S = 300
# 2026-12-01 21:00:33,805	INFO scripts.py:940 -- Local node IP: 172.17.0.2
RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(\w+) (\S+) -- (.*)$")
# `ray stop`-style progress is printed without newlines: one line may hold several records.
RECORD_START = re.compile(r"(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t)")
LEVELS = {"SUCC": "info", "VINFO": "debug", "INFO": "info", "WARNING": "warning", "WARN": "warning",
          "ERROR": "error", "CRITICAL": "critical", "DEBUG": "debug"}


class ConfigError(Exception):
    """A setting that cannot work; the message says what to fix."""


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    if not argv or argv[0] not in ROLES:
        raise ConfigError(f"the first argument must be one of {', '.join(ROLES)}, got {argv[:1] or 'none'}")
    role, rest = argv[0], argv[1:]
    if role == "driver" and (rest[:1] != ["--"] or len(rest) < 2):
        raise ConfigError("driver needs the program to run after `--`, e.g. driver -- flower-superlink ...")
    if role == "head" and rest and (rest[0] != "--" or len(rest) < 2):
        raise ConfigError(f"head takes a program to run after `--` or nothing, got {' '.join(rest)}")
    if role == "worker" and rest:
        raise ConfigError(f"worker takes no more arguments, got {' '.join(rest)}")
    return role, rest[1:]


def head_address() -> tuple[str, int]:
    """RAY_HEAD_ADDRESS resolved to an IP: Ray's TLS checks the name dialled, and its
    certificates name IPs."""
    raw = os.getenv("RAY_HEAD_ADDRESS", "")
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"RAY_HEAD_ADDRESS={raw!r} is not host:port: set it to the head's address, "
                          f"e.g. ray-head:{GCS_PORT} (one engine) or 203.0.113.10:{GCS_PORT} (across machines)")
    try:
        ip = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise ConfigError(f"RAY_HEAD_ADDRESS={raw!r}: {host} does not resolve ({exc}): is the name right, "
                          "and is the head started?") from exc
    return ip, int(port)


def node_ip(role: str, head: tuple[str, int] | None) -> str:
    raw = os.getenv("RAY_NODE_IP", "")
    if raw:
        try:
            return str(ipaddress.ip_address(raw))
        except ValueError:
            raise ConfigError(f"RAY_NODE_IP={raw!r} is not an IP address: set it to the address the "
                              "other Ray nodes reach this one at (with host networking: the host's)") from None
    if head is None:  # the head: this container's address on its network
        ip = socket.gethostbyname(socket.gethostname())
    else:  # the address of the route to the head (no packet is sent)
        with socket.socket(socket.AF_INET6 if ":" in head[0] else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(head)
            ip = probe.getsockname()[0]
    if ipaddress.ip_address(ip).is_loopback:
        raise ConfigError(f"this node's address would be {ip} (loopback), which no other node can reach: "
                          "set RAY_NODE_IP to the host's address")
    return ip


def check_tls(ip: str) -> bool:
    """The files exist, and the certificate can work for this node; False: TLS is off."""
    if os.getenv("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return False
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    unreadable = [f"{name}={os.getenv(name)!r}" for name in TLS_FILES
                  if not os.getenv(name) or not os.access(os.environ[name], os.R_OK)]
    if unreadable:
        raise ConfigError(f"RAY_USE_TLS=1 but cannot read {', '.join(unreadable)}: mount the folder that "
                          "`certs/make-certs.sh ray` made (RAY_CERTS_DIR), readable by uid 49999")
    path = os.environ["RAY_TLS_SERVER_CERT"]
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError as exc:
        raise ConfigError(f"RAY_TLS_SERVER_CERT={path} is not a PEM certificate") from exc
    try:
        ips = {str(a) for a in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
               .value.get_values_for_type(x509.IPAddress)}
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ips, usages = set(), set()
    if ip not in ips:
        raise ConfigError(f"{path} does not name this node's address {ip} (Ray dials nodes by IP and checks "
                          f"the name): issue one that does, e.g. certs/make-certs.sh ray --san IP:{ip} "
                          "(or --subnet <the compose network>)")
    if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages:
        raise ConfigError(f"{path} is not for both ends of a TLS link (serverAuth and clientAuth): "
                          "issue a Ray node certificate with certs/make-certs.sh ray")
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        raise ConfigError(f"{path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: issue a new one "
                          "with certs/make-certs.sh ray --force")
    return True


def check_token() -> bool:
    if os.getenv("RAY_AUTH_MODE", "disabled") != "token":
        return False
    path = os.getenv("RAY_AUTH_TOKEN_PATH", "")
    try:
        if Path(path).read_text().strip():
            return True
    except OSError:
        pass
    raise ConfigError(f"RAY_AUTH_MODE=token but RAY_AUTH_TOKEN_PATH={path!r} is not a readable, non-empty file: "
                      "mount the folder that `certs/make-certs.sh ray` made (its ray.token)")


def number(name: str, kind: type = int) -> str | None:
    raw = os.getenv(name, "")
    if not raw:
        return None
    try:
        if kind(raw) < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of {'MiB' if name.endswith('_MB') else 'units'} "
                          "(0 or more)") from None
    return raw


def ray_command(role: str, ip: str, head: tuple[str, int] | None) -> list[str]:
    store_mb = int(number("RAY_OBJECT_STORE_MB") or 256)
    command = ["ray", "start", "--block", "--disable-usage-stats", "--node-ip-address", ip,
               "--object-store-memory", str(store_mb * 1024 * 1024), *PORTS]
    if role == "head":
        return command + ["--head", "--port", str(GCS_PORT), "--num-cpus", "0", "--num-gpus", "0",
                          "--include-dashboard", "false"]
    command += ["--address", f"[{head[0]}]:{head[1]}" if ":" in head[0] else f"{head[0]}:{head[1]}"]
    if role == "driver":  # the driver's node runs no ClientApp
        return command + ["--num-cpus", "0", "--num-gpus", "0"]
    for option, name, kind in (("--num-cpus", "RAY_NUM_CPUS", int), ("--num-gpus", "RAY_NUM_GPUS", float)):
        if (value := number(name, kind)) is not None:
            command += [option, value]
    return command


def relay(stream, started: threading.Event) -> None:
    """`ray start`'s text, one `ray_log` event per record."""
    for raw in stream:
        if is_json_object(raw):  # the `ray` CLI's Python warnings, through the logging hook
            sys.stdout.write(raw.strip() + "\n")
            continue
        for record in RECORD_START.split(raw.rstrip("\n")):
            if not (text := record.strip()):
                continue
            match = RAY_LINE.match(text)
            level, source, message = (LEVELS.get(match[1], "info"), match[2], match[3]) if match else \
                ("info", "ray", text)
            getattr(log, level)("ray_log", message=message, source=source)
            if message == STARTED:
                started.set()


def is_json_object(line: str) -> bool:
    try:
        return line.lstrip().startswith("{") and isinstance(json.loads(line), dict)
    except ValueError:
        return False


def supervise(role: str, command: list[str], program: list[str], fields: dict) -> int:
    ray = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", start_new_session=True)
    started = threading.Event()
    reader = threading.Thread(target=relay, args=(ray.stdout, started), daemon=True)
    reader.start()
    children = [ray]

    def stop(signum, _frame) -> None:  # docker stop: end the program first, then Ray
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not started.wait(0.5) and ray.poll() is None and time.monotonic() < deadline:
        pass
    if not started.is_set() and ray.poll() is not None:
        reader.join(5)  # a `ray start` that said it joined, then ended: its last lines may still be in the pipe
    if not started.is_set():
        code = ray.poll()
        if code is None:
            ray.terminate()
            ray.wait()
        reader.join(5)
        log.error("ray_node_failed", **fields, exit_code=code,
                  error="`ray start` ended before the node joined" if code is not None else
                  f"the node had not joined after {START_TIMEOUT_S} s",
                  hint="its ray_log lines above say why: an unreachable head, or a TLS or token mismatch")
        return 1
    log.info("ray_node_started", **fields)
    if program:  # Flower's ray.init() reads RAY_ADDRESS: the cluster this node joined
        own = f"{fields['node_ip']}:{GCS_PORT}"
        env = {**os.environ, "RAY_ADDRESS": os.getenv("RAY_ADDRESS") or fields.get("head", own)}
        children.append(subprocess.Popen(program, env=env))
    code = wait_first(children)
    ended = "ray" if ray.poll() is not None else "program"
    stop(signal.SIGTERM, None)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    reader.join(5)
    (log.info if code == 0 else log.error)("ray_node_stopped", **fields, exit_code=code,
                                           stopped_first=ended if program else "ray")
    return code


def wait_first(children: list[subprocess.Popen]) -> int:
    """The exit code of whichever child ends first."""
    done = threading.Event()
    for child in children:
        threading.Thread(target=lambda c=child: (c.wait(), done.set()), daemon=True).start()
    done.wait()
    return next(c.returncode for c in children if c.returncode is not None)


def main(argv: list[str]) -> int:
    try:
        role, program = parse_args(argv)
        head = None if role == "head" else head_address()
        ip = node_ip(role, head)
        tls, token = check_tls(ip), check_token()
        command = ray_command(role, ip, head)
    except ConfigError as exc:
        log.error("ray_node_config_invalid", error=str(exc))
        return 2
    if not tls:
        log.warning("ray_tls_off", hint="plaintext between Ray nodes, and anyone who reaches a Ray port "
                    "can run code on every node: set RAY_USE_TLS=1 (docs/ray.md)")
    fields = {"role": role, "node_ip": ip, "tls": tls, "token_auth": token,
              **({"head": f"{head[0]}:{head[1]}"} if head else {})}
    return supervise(role, command, program, fields)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
