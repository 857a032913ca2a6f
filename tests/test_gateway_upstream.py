"""The gateway in front of a SuperLink that answers 500 (tests/superlink_stub.py): real nginx,
real TLS. Flower's SuperNode drops a reply whose push got a 500 and retries only 502-504; the
SuperLink's 500 is in practice its SQLite lock past the busy timeout, with nothing done. So on
the Fleet port the gateway answers 503 with Retry-After (the SuperNode tries again) and logs a
warning with the upstream's 500; on the Control port, where a person reads it, the 500 stays."""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from pathlib import Path

import pytest

from tests.conftest import Project, free_port
from tests.deployment import make_certs

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def gateway(images, tmp_path_factory):
    certs = tmp_path_factory.mktemp("stub-certs")
    make_certs("init", "--out", str(certs), "--nodes", "0")
    ports = {"fleet": free_port(), "control": free_port()}
    project = Project(f"fd-stub-{uuid.uuid4().hex[:6]}", ["docker/compose.server.yaml", "tests/compose.superlink-stub.yaml"],
                      {"SERVER_CERTS_DIR": str(certs / "server"), "FLEET_PORT": str(ports["fleet"]),
                       "CONTROL_PORT": str(ports["control"]), "RESTART": "no"})
    try:
        project.compose("up", "-d", "--no-build", "--wait", "superlink", "gateway", timeout=300)
        yield project, ports, certs / "user/ca.crt"
    finally:
        project.down()


def post(port: int, ca: Path, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPSConnection("localhost", port, timeout=30,
                                             context=ssl.create_default_context(cafile=str(ca)))
    connection.request("POST", path, body=b"\x00" * 64, headers={"Content-Type": "application/protobuf"})
    response = connection.getresponse()
    response.body = response.read()
    return response


def test_a_superlink_500_on_the_fleet_port_is_a_503_to_retry(gateway):
    project, ports, ca = gateway
    for path in ("/v1/fleet/push-messages", "/v1/fleet/push-object", "/v1/fleet/pull-messages"):
        response = post(ports["fleet"], ca, path)
        assert response.status == 503, (path, response.status, response.body)
        assert response.getheader("Retry-After") == "2"
        assert b"try again" in response.body
    [line] = [e for e in project.logs("gateway")
              if e["event"] == "gateway_request" and e["path"] == "/v1/fleet/push-object"]
    assert (line["status"], line["upstream_status"], line["level"], line["port"]) == (503, "500", "warning", 9092)


def test_a_superlink_500_on_the_control_port_stays_a_500(gateway):
    project, ports, ca = gateway
    response = post(ports["control"], ca, "/v1/control/list-runs")
    assert response.status == 500 and json.loads(response.body) == {"detail": "Internal server error."}
    [line] = [e for e in project.logs("gateway")
              if e["event"] == "gateway_request" and e["path"] == "/v1/control/list-runs"]
    assert (line["status"], line["upstream_status"], line["level"]) == (500, "500", "warning")
