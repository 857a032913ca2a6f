"""Container health probe: exit 0 when the URL (argument, or $HEALTHCHECK_URL) answers, 1 otherwise.

  http(s)://host:port/health   Flower's HTTP APIs (SuperLink, SuperNode, gateway)
  grpc://host:port             Flower's gRPC health server (SuperExec)
  tcp://host:port              a port that accepts connections (the log aggregator)
  supernode://host:port/health the SuperNode's own API, and then the SuperLink's
                               /health, over the TLS the node uses (verified with
                               its CA; the target comes from the file that
                               supernode_entrypoint.py writes): a node that cannot
                               reach its SuperLink, or whose address does not
                               resolve, or whose site data cannot be used, is
                               unhealthy

  any://host:port/health       over TLS, else in plaintext: one image probe for a
                               SuperLink with or without TLS (a plaintext one logs
                               the TLS attempt as an invalid request)

The probe asks the container's own port on loopback, so it does not verify the
certificate unless HEALTHCHECK_CA_FILE names a CA (SuperNodes and the flwr CLI
always verify).

Run it as `python3 -I -S`: without site-packages, so without the logging hook,
a probe costs 0.14 s of CPU instead of 0.5 s (it runs every few seconds in
every container). Only the gRPC probe needs a package, from the venv.
"""

import json
import os
import socket
import ssl
import sys
import urllib.request

SUPERNODE_TARGET = "/tmp/flowerdock-supernode.json"  # written by supernode_entrypoint.py


def main(url: str) -> int:
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        socket.create_connection((host, int(port)), timeout=3).close()
        return 0
    if url.startswith("grpc://"):
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        sys.path.append(os.path.join(os.getenv("VIRTUAL_ENV", "/opt/venv"), "lib", version, "site-packages"))
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
    if url.startswith("supernode://"):
        with open(SUPERNODE_TARGET) as file:
            target = json.load(file)
        if target.get("site_data_state"):  # written by site_data_watch.py
            with open(target["site_data_state"]) as file:
                problem = json.load(file)["problem"]
            if problem:
                raise ValueError(f"this site's data cannot be used: {problem}")
        local = get("http://" + url.removeprefix("supernode://"), unverified())
        return local or superlink_reachable(target)
    ca_file = os.getenv("HEALTHCHECK_CA_FILE")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else unverified()
    if url.startswith("any://"):
        try:
            return get("https://" + url.removeprefix("any://"), context)
        except Exception:  # noqa: BLE001 - a plaintext server, or down: plaintext decides
            url = "http://" + url.removeprefix("any://")
    return get(url, context)


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def superlink_reachable(target: dict) -> int:
    if target["ca"] is None:  # --insecure: plaintext, for debugging
        return get(f"http://{target['superlink']}/health", unverified())
    return get(f"https://{target['superlink']}/health", ssl.create_default_context(cafile=target["ca"]))


def get(url: str, context: ssl.SSLContext) -> int:
    with urllib.request.urlopen(url, timeout=3, context=context) as response:
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    try:
        # The URL: an argument, or HEALTHCHECK_URL, which each image sets for the one
        # HEALTHCHECK they all inherit (docker/Dockerfile).
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ["HEALTHCHECK_URL"]))
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
