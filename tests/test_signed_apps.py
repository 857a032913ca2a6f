"""Signed apps only (docs/signed-apps.md): scripts/publish_app.py signs a FAB the way Flower
verifies it, docker/app_registry.py serves it as Flower's app hub would, and SuperNodes with
trusted-entities.yaml (Flower's --trusted-entities) run it and nothing else.

Unit tests check the signature with Flower's own verifier and the registry over real HTTP; the
docker tests use the shared deployment (tests/deployment.py), whose SuperNodes run signed apps
only: an unsigned FAB, a tampered one and one signed by another key are each refused by every
SuperNode, per message, with the reason in the ServerApp's lines, and the federation goes on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from flwr.supercore.fab import Fab
from flwr.supernode.start_client_internal import _verify_fab

from tests.conftest import ROOT, free_port, sh
from tests.deployment import Deployment
from tests.fab_packages import copy_app

sys.path.insert(0, str(ROOT / "scripts"))
import publish_app  # noqa: E402


def make_publisher(out: Path) -> tuple[Path, dict]:
    sh(sys.executable, "certs/make_certs.py", "init", "--out", str(out), "--nodes", "1")
    sh(sys.executable, "certs/make_certs.py", "publisher", "--out", str(out))
    entities = yaml.safe_load((out / "supernode-1/trusted-entities.yaml").read_text())
    return out / "publisher/publisher.key", entities


def app_copy(tmp: Path, version: str) -> Path:
    """This checkout's app under another version (a new release of it)."""
    folder = tmp / f"app-{version}"
    copy_app(folder)
    text = (ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(text.replace('version = "1.0.0"', f'version = "{version}"', 1))
    return folder


def verified(registry: Path, version: str, entities: dict) -> bool:
    """What a SuperNode decides, by Flower's own code, for what the registry holds."""
    folder = registry / "flowerdock/flowerdock"
    fab = (folder / f"{version}.fab").read_bytes()
    signed = json.loads((folder / f"{version}.json").read_text())
    verifications = {v["public_key_id"]: json.dumps({k: v[k] for k in ("signature", "signed_at")})
                     for v in signed["verifications"]}
    return _verify_fab(Fab(hashlib.sha256(fab).hexdigest(), fab, {**verifications, "valid_license": "Valid"}),
                       entities)


def test_a_published_app_verifies_with_flowers_own_check_and_nothing_else_does(tmp_path):
    key, entities = make_publisher(tmp_path / "certs")
    _, other_entities = make_publisher(tmp_path / "other")
    registry = tmp_path / "registry"
    published = publish_app.publish(ROOT, publish_app.load_key(key), registry, force=False)
    assert published["app"] == "@flowerdock/flowerdock==1.0.0" and published["public_key_id"] in entities
    assert verified(registry, "1.0.0", entities)
    assert not verified(registry, "1.0.0", other_entities)  # a key the site does not trust

    fab = registry / "flowerdock/flowerdock/1.0.0.fab"
    tampered = bytearray(fab.read_bytes())
    tampered[len(tampered) // 2] ^= 1
    fab.write_bytes(bytes(tampered))
    assert not verified(registry, "1.0.0", entities)  # one bit changed after signing

    with pytest.raises(publish_app.PublishError, match="is in the registry already"):
        publish_app.publish(ROOT, publish_app.load_key(key), registry, force=False)


def test_publishing_refuses_a_key_that_is_not_the_publishers(tmp_path):
    sh(sys.executable, "certs/make_certs.py", "init", "--out", str(tmp_path), "--nodes", "1")
    with pytest.raises(publish_app.PublishError, match="not an Ed25519 key"):
        publish_app.load_key(tmp_path / "supernode-1/supernode.key")  # an EC node key
    result = sh(sys.executable, "scripts/publish_app.py", "--key", str(tmp_path / "nope"), "--registry",
                str(tmp_path / "r"), check=False)
    assert result.returncode == 2 and "certs/make-certs.sh publisher" in json.loads(result.stderr)["error"]


@pytest.fixture
def registry_server(tmp_path):
    key, _ = make_publisher(tmp_path / "certs")
    registry = tmp_path / "registry"
    publish_app.publish(ROOT, publish_app.load_key(key), registry, force=False)
    publish_app.publish(app_copy(tmp_path, "1.2.0"), publish_app.load_key(key), registry, force=False)
    port = free_port()
    env = {"REGISTRY_DIR": str(registry), "PORT": str(port), "LOG_FORMAT": "json"}
    server = subprocess.Popen([sys.executable, "docker/app_registry.py"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**__import__("os").environ, **env})
    for _ in range(50):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", registry
    server.kill()


def fetch(base: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/v1/hub/fetch-fab", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_registry_answers_as_flowers_app_hub(registry_server):
    from flwr.supercore.utils import request_download_link

    base, registry = registry_server
    # Flower's own client, as the SuperLink calls it.
    url, verifications, _ = request_download_link("@flowerdock/flowerdock", "1.0.0", f"{base}/v1/hub/fetch-fab",
                                                  "fab_url")
    with urllib.request.urlopen(url.replace("app-registry", "127.0.0.1"), timeout=5) as reply:
        assert reply.read() == (registry / "flowerdock/flowerdock/1.0.0.fab").read_bytes()
    assert [set(v) for v in verifications] == [{"public_key_id", "signed_at", "signature"}]
    assert fetch(base, json.dumps({"app_id": "@flowerdock/flowerdock", "app_version": None}).encode())[1][
        "fab_url"].endswith("/1.2.0.fab")  # no version: the latest
    status, answer = fetch(base, json.dumps({"app_id": "@flowerdock/flowerdock", "app_version": "9.9.9"}).encode())
    assert status == 404 and answer["detail"]["available_app_versions"] == ["1.0.0", "1.2.0"]
    for bad in (b"not json", b'{"app_id": "flowerdock"}', b'{"app_id": "@a/b", "app_version": "../1"}', b"{}"):
        assert fetch(base, bad)[0] == 400, bad
    for path in ("/fab/flowerdock/flowerdock/../../../etc/passwd", "/fab/%2e%2e/x/1.0.0.fab", "/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + path, timeout=5)


# --- In the deployment: SuperNodes that run signed apps only ----------------------------

def refused_everywhere(deployment: Deployment, app: str) -> list[dict]:
    """Submit an app the SuperNodes must refuse; its run's client lines."""
    before = {r["run-id"] for r in deployment.flwr_json("ls", "remote")["runs"]}
    deployment.flwr("run", app, "remote", "--stream", "--run-config",
                    "num-server-rounds=1 min-nodes=2 min-replies=2 fraction-train=1.0 fraction-evaluate=1.0",
                    timeout=600)
    [run] = [r for r in deployment.flwr_json("ls", "remote")["runs"] if r["run-id"] not in before]
    return [e for e in deployment.server.logs("serverapp")
            if e.get("run_id") == run["run-id"] and e["event"] == "client_round"]


@pytest.mark.docker
def test_an_unsigned_app_is_refused_by_every_supernode(deployment, unaffected):
    lines = refused_everywhere(deployment, ".")  # `flwr run .`: a FAB no one signed
    assert {(e["node_id"], e["status"], e["reason"]) for e in lines} == {
        (node, "failed", "invalid_fab") for node in deployment.nodes_before}
    said = [e for client in deployment.clients for e in client.logs("supernode")
            if "FAB could not be verified" in e["event"]]
    assert len(said) >= len(deployment.clients)


@pytest.mark.docker
def test_a_tampered_app_and_one_signed_by_another_key_are_refused(deployment, unaffected, tmp_path):
    deployment.publish(app_copy(tmp_path, "1.0.1"))
    fab = deployment.registry / "flowerdock/flowerdock/1.0.1.fab"
    fab.write_bytes(fab.read_bytes() + b"\0")  # after signing: the hash no longer matches
    other = tmp_path / "other"
    sh(sys.executable, "certs/make_certs.py", "init", "--out", str(other), "--nodes", "0")
    sh(sys.executable, "certs/make_certs.py", "publisher", "--out", str(other))
    sh(sys.executable, "scripts/publish_app.py", str(app_copy(tmp_path, "1.0.2")), "--key",
       str(other / "publisher/publisher.key"), "--registry", str(deployment.registry))
    for app in ("@flowerdock/flowerdock==1.0.1", "@flowerdock/flowerdock==1.0.2"):
        lines = refused_everywhere(deployment, app)
        assert {(e["status"], e["reason"]) for e in lines} == {("failed", "invalid_fab")}, app
        assert {e["node_id"] for e in lines} == deployment.nodes_before, app
