"""A deployment across machines, on one machine: the server side and two client
sides as separate compose projects that share no Docker network. Clients reach the
SuperLink only through its published port, under the name its certificate carries;
runs are submitted with `flwr run` from the host through the Control API port.

The deployment is tests/deployment.py's, shared with the other modules that need
one (the session fixture `deployment`, tests/conftest.py). Then everything that must be refused is tried, each against the running
federation, which must not notice: plaintext, a foreign CA, an unregistered key,
`flwr run` without the CA, a name the certificate does not carry, and the Control
and Runtime APIs asked on the public port.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import exchanges, sh
from tests.deployment import APP, PUBLIC_NAME, ROUNDS, probe

pytestmark = pytest.mark.docker


def test_a_plaintext_supernode_is_refused(deployment, unaffected):
    status, lines = deployment.run_refused_supernode(deployment.client(
        f"{deployment.probe.name}-plain", "supernode-1", 0), "--insecure")
    assert status == 2
    assert any("requires TLS: remove --insecure" in e.get("error", "") for e in lines), lines
    # And the server side: a plaintext request on the public port never reaches the SuperLink.
    reply = probe(deployment, f"""
import http.client, json
c = http.client.HTTPConnection("{PUBLIC_NAME}", {deployment.fleet_port}, timeout=10)
c.request("POST", "/v1/fleet/pull-messages", body=b"")
r = c.getresponse()
print(json.dumps([r.status, r.read().decode(errors="replace")]))
""")
    status, body = json.loads(reply)
    assert status == 400 and "plain HTTP request was sent to HTTPS port" in body


def test_a_supernode_trusting_another_ca_is_refused(deployment, unaffected):
    status, lines = deployment.run_refused_supernode(deployment.client(
        f"{deployment.probe.name}-ca", "supernode-1", 0, certs=deployment.other_certs))
    assert status == 2
    assert any("has a certificate this node does not trust" in e.get("error", "") for e in lines), lines


def test_a_supernode_with_an_unregistered_key_is_refused(deployment, unaffected):
    status, lines = deployment.run_refused_supernode(deployment.client(
        f"{deployment.probe.name}-key", "supernode-3", 1))
    assert status != 0
    assert any("Failed to activate SuperNode" in e["event"] for e in lines), lines
    refusals = [e for e in deployment.server.logs("superlink")
                if "No SuperNode found with the given public key" in e["event"]]
    assert refusals, "the SuperLink did not log the refusal"


def test_a_supernode_using_a_name_not_in_the_certificate_is_refused(deployment, unaffected):
    status, lines = deployment.run_refused_supernode(deployment.client(
        f"{deployment.probe.name}-san", "supernode-1", 0,
        superlink=f"wrong-name.flowerdock.test:{deployment.fleet_port}"))
    assert status == 2
    assert any("certificate is not valid for 'wrong-name.flowerdock.test'" in e.get("error", "")
               for e in lines), lines
    assert any(e["reason"] == "bad certificate" for e in deployment.gateway_events("tls_handshake_failed"))


def test_flwr_run_without_the_ca_certificate_is_refused(deployment, unaffected):
    runs_before = deployment.flwr_json("ls", "remote")["runs"]
    reply = deployment.flwr_json("run", ".", "remote-without-ca")
    assert reply["success"] is False
    assert any(e["reason"] == "unknown ca" for e in deployment.gateway_events("tls_handshake_failed"))
    assert deployment.flwr_json("ls", "remote")["runs"] == runs_before  # nothing was submitted


def test_the_public_port_serves_neither_control_nor_runtime_api(deployment, unaffected):
    reply = json.loads(probe(deployment, f"""
import http.client, json, socket, ssl
context = ssl.create_default_context(cafile="/certs/ca.crt")
status = {{}}
for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/acquire-task", "/docs"):
    c = http.client.HTTPSConnection("{PUBLIC_NAME}", {deployment.fleet_port}, context=context, timeout=10)
    c.request("POST", path, body=b"")
    status[path] = c.getresponse().status
try:  # the Control API port is published on the server's loopback only
    socket.create_connection(("{PUBLIC_NAME}", {deployment.control_port}), timeout=5).close()
    status["control_port"] = "open"
except OSError as exc:
    status["control_port"] = type(exc).__name__
print(json.dumps(status))
"""))
    assert reply == {"/v1/control/list-runs": 403, "/v1/control/start-run": 403,
                     "/v1/runtime/acquire-task": 403, "/docs": 403,
                     "control_port": "ConnectionRefusedError"}
    refused = [e for e in deployment.server.logs("gateway")
               if e["event"] == "gateway_refused" and e["reason"] == "path not served"]
    assert {e["path"] for e in refused} >= {"/v1/control/list-runs", "/v1/runtime/acquire-task"}


def test_the_runtime_api_wants_the_superexec_secret(deployment, unaffected):
    # Even inside the server's private network, a caller without the shared secret
    # cannot take ServerApp tasks.
    out = deployment.server.compose("run", "--rm", "--no-deps", "--entrypoint", "python3", "register-supernodes",
                                    "-c", """
import http.client, ssl
c = http.client.HTTPSConnection("superlink", 8000, timeout=10,
                                context=ssl.create_default_context(cafile="/certs/server/ca.crt"))
c.request("POST", "/v1/runtime/acquire-task", body=b"", headers={"Content-Type": "application/protobuf"})
print("STATUS", c.getresponse().status)
""", timeout=120).stdout
    status = int(out.split("STATUS")[-1].split()[0])
    assert status in (401, 403), out


@pytest.mark.network
def test_a_run_from_a_laptop_with_flowers_cli_alone_completes_on_both_supernodes(deployment, unaffected, cli_venv):
    # `make cli`'s venv (no torch, no app) and docker/submitter.toml.example's connection
    result = deployment.flwr("run", APP, "remote", "--stream", "--run-config",
                             f"num-server-rounds={ROUNDS} min-nodes=2 fraction-train=1.0 fraction-evaluate=1.0",
                             timeout=600, flwr=str(cli_venv / "bin/flwr"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = [r for r in deployment.flwr_json("ls", "remote")["runs"]]
    assert run["status"] == "finished:completed"

    events = [e for e in deployment.server.logs("serverapp") if e.get("run_id") == run["run-id"]]
    per_client = Counter((e["server_round"], e["phase"], e["node_id"])
                         for e in events if e["event"] == "client_round" and e["status"] == "ok")
    assert set(per_client.values()) == {1}
    assert len(per_client) == len(exchanges(ROUNDS)) * 2  # exchanges x SuperNodes
    assert {(r, phase) for r, phase, _ in per_client} == exchanges(ROUNDS)
    assert {node for _, _, node in per_client} == deployment.nodes_before
    # Each site says which device trained: the CPU image's, here (a GPU site's fallback would show)
    assert {e["device"] for e in events if e["event"] == "client_round" and e["phase"] == "train"} == {"cpu"}
    # The streamed logs reached the user's terminal too.
    assert "client_round" in result.stdout


def test_a_100_mib_model_crosses_the_tls_gateway(deployment, unaffected):
    before = {r["run-id"] for r in deployment.flwr_json("ls", "remote")["runs"]}
    started = time.monotonic()
    result = deployment.flwr("run", APP, "remote", "--stream", "--run-config",
                             "num-server-rounds=1 min-nodes=2 fraction-train=1.0 fraction-evaluate=1.0 "
                             "extra-model-mb=100", timeout=900)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = [r for r in deployment.flwr_json("ls", "remote")["runs"] if r["run-id"] not in before]
    assert run["status"] == "finished:completed"
    events = [e for e in deployment.server.logs("serverapp") if e.get("run_id") == run["run-id"]]
    assert [e["status"] for e in events if e["event"] == "client_round"] == ["ok"] * 4
    # Through the gateway: each SuperNode pulled the model for training and pushed it back
    # (and pulled it for evaluation, less what its store already held: Flower's chunks are
    # content-addressed).
    fleet = [e for e in deployment.server.logs("gateway") if e["event"] == "gateway_request" and e["port"] == 9092]
    carried = sum(int(e["bytes_in"]) + int(e["bytes_out"]) for e in fleet)
    assert carried > 2 * 2 * 100 * 2**20
    print(f"\n100 MiB model, 1 round, 2 SuperNodes: {took:.0f} s, {carried / 1e6:.0f} MB through the gateway")


HEALTH_PROBE = ["python3", "-I", "-S", "/usr/local/lib/flowerdock/healthcheck.py", "supernode://127.0.0.1:9094/health"]


def test_a_supernode_that_cannot_reach_its_superlink_is_unhealthy(deployment, unaffected):
    [healthy] = deployment.clients[0].containers("supernode")
    assert sh("docker", "exec", healthy, *HEALTH_PROBE, check=False).returncode == 0
    lost = deployment.client(f"{deployment.probe.name}-lost", "supernode-1", 0,
                             superlink=f"nowhere.flowerdock.test:{deployment.fleet_port}")
    lost.compose("up", "-d", "--no-build", "supernode")
    [container] = lost.containers("supernode")
    unresolved = ("name or service not known", "name resolution")
    for _ in range(60):  # first its own API must be up; then the SuperLink's name fails the probe
        result = sh("docker", "exec", container, *HEALTH_PROBE, check=False)
        if any(words in result.stderr.lower() for words in unresolved):
            break
        time.sleep(1)
    assert result.returncode == 1 and "unhealthy" in result.stderr, result.stderr
    assert any(words in result.stderr.lower() for words in unresolved), result.stderr
    lost.down()


RESTARTS = 10


def wait_until_healthy(container: str, timeout: float) -> None:
    """Running and healthy (it may be unhealthy or restarting on the way: that is allowed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = sh("docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container,
                   check=False).stdout.strip()
        if state == "running healthy":
            return
        time.sleep(1)
    pytest.fail(f"{container} is not healthy {timeout:.0f} s after the restart: {state}")


def test_supernodes_come_back_after_the_superlink_and_gateway_restart_again_and_again(deployment):
    # As in a certificate rotation: the server side restarts while the SuperNodes idle. Flower's
    # SuperNode may give up on an SSL/TLS error mid-restart; then its entrypoint ends it and the
    # restart policy brings a fresh one, with no hand restart.
    back_after = []
    for _ in range(RESTARTS):
        started = time.monotonic()
        deployment.server.compose("restart", "-t", "5", "superlink", "gateway", timeout=120)
        deployment.server.compose("up", "-d", "--no-build", "--wait", "superlink", "gateway", timeout=120)
        for client in deployment.clients:  # healthy: its own API answers, and so does the SuperLink
            [container] = client.containers("supernode")
            wait_until_healthy(container, timeout=180)
        deployment.wait_for_online_nodes(2)  # and the SuperLink lists both online
        back_after.append(time.monotonic() - started)
    gave_up = [e for client in deployment.clients for e in client.logs("supernode")
               if e["event"] == "supernode_lost_superlink"]
    print(f"\n{RESTARTS} restarts: every SuperNode healthy again after at most {max(back_after):.1f} s "
          f"(median {sorted(back_after)[RESTARTS // 2]:.1f} s); Flower gave up {len(gave_up)} times "
          "(each time the node was restarted by policy)")

    # Every SuperNode answers the next round.
    runs_before = {r["run-id"] for r in deployment.flwr_json("ls", "remote")["runs"]}
    result = deployment.flwr("run", APP, "remote", "--stream", "--run-config",
                             "num-server-rounds=1 min-nodes=2 expected-nodes=2 min-replies=2 "
                             "fraction-train=1.0 fraction-evaluate=1.0", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = [r for r in deployment.flwr_json("ls", "remote")["runs"] if r["run-id"] not in runs_before]
    events = [e for e in deployment.server.logs("serverapp") if e.get("run_id") == run["run-id"]]
    why = [{k: e.get(k) for k in ("event", "node_id", "phase", "status", "reason", "error")} for e in events
           if e["event"] in ("client_round", "round_skipped", "run_failed", "superlink_pull_failed")]
    assert run["status"] == "finished:completed", why
    answered = {e["node_id"] for e in events
                if e["event"] == "client_round" and e["status"] == "ok" and e["phase"] == "train"}
    assert answered == deployment.nodes_before
    for client in deployment.clients:
        [container] = client.containers("supernode")
        assert sh("docker", "inspect", "-f", "{{.State.Status}}", container).stdout.strip() == "running"




def test_each_server_and_client_container_reads_only_its_own_secrets(deployment, unaffected):
    from tests.test_faults import process_users, readable_secrets

    server = {service: deployment.server.containers(service)[0]
              for service in ("superlink", "serverapp", "gateway", "app-registry")}
    assert readable_secrets(server["superlink"], 49999) == ["/certs/server/superexec.secret",
                                                            "/certs/server/superlink.key"]
    assert readable_secrets(server["serverapp"], 49999) == ["/certs/server/superexec.secret"]
    assert readable_secrets(server["gateway"], 49999) == ["/certs/server/superlink.key"]  # TLS, not the secret
    assert readable_secrets(server["app-registry"], 49999) == []
    for client in deployment.clients:
        [container] = client.containers("supernode")
        assert process_users(container)["python3 flower-supernode"] == 49998
        assert readable_secrets(container, 49998) == ["/certs/supernode.key"]
        assert readable_secrets(container, 49999) == []  # ClientApps
        assert readable_secrets(container, 0) == []
    for container in (*server.values(), *(c.containers("supernode")[0] for c in deployment.clients)):
        mounts = json.loads(sh("docker", "inspect", "-f", "{{json .Mounts}}", container).stdout)
        assert not any("ca" in (Path(m["Source"]).name, Path(m["Source"]).parent.name) for m in mounts), mounts
