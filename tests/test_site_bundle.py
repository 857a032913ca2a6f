"""scripts/site_bundle.py: a site's folder holds all it runs from, and nothing of this checkout.

Here, what the bundle is (Compose renders it alone; no engine needed). That three sites run from
their bundles alone, through the published gateway, all `ok` every round: tests/test_sites.py."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests.conftest import ROOT, sh

SUPERLINK = "flower.example.org:9092"
KNOBS = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / "docker/client.env.example").read_text(), re.M))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ca") / "certs"
    sh(sys.executable, "certs/make_certs.py", "init", "--out", str(out), "--nodes", "2")
    return out


def bundle(certs, out, node: str, *args: str) -> dict:
    made = sh(sys.executable, "scripts/site_bundle.py", node, "--superlink", SUPERLINK, "--certs", str(certs),
              "--out", str(out), *args)
    return json.loads(made.stdout.strip().splitlines()[-1])


def render(folder, env: dict | None = None) -> dict:
    """The bundle as Compose runs it, from its own folder (where it reads .env)."""
    own = {k: v for k, v in os.environ.items() if k not in KNOBS} | (env or {})  # the bundle's .env decides
    rendered = subprocess.run(["docker", "compose", "-f", str(folder / "compose.yaml"), "config", "--format", "json"],
                              capture_output=True, text=True, env=own, check=True)
    return json.loads(rendered.stdout)


def test_a_bundle_is_its_compose_file_env_file_keys_and_readme(certs, tmp_path):
    made = bundle(certs, tmp_path, "supernode-1", "--partition", "1", "--num-partitions", "3")
    folder = tmp_path / "supernode-1"
    assert set(made["files"]) == {"compose.yaml", ".env", "README.md", "certs/ca.crt", "certs/supernode.key",
                                  "certs/supernode.pub"}
    config = render(folder)
    supernode = config["services"]["supernode"]
    assert "build" not in supernode  # a site loads the image; it has no build context
    assert supernode["environment"].items() >= {"SUPERLINK": SUPERLINK, "PARTITION_ID": "1",
                                                "NUM_PARTITIONS": "3"}.items()
    [keys] = [v for v in supernode["volumes"] if v["target"] == "/certs"]
    assert keys["source"] == str(folder / "certs") and keys["read_only"]
    assert str(ROOT) not in json.dumps(config)  # nothing of this checkout
    assert supernode["image"] == made["image"] == "flowerdock/supernode:1.0.0-cpu"
    # The key as the CA made it: mode 0600 (and, made as root, its owner 49998)
    key, original = folder / "certs/supernode.key", certs / "supernode-1/supernode.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes() == original.read_bytes()
    assert (key.stat().st_uid, key.stat().st_gid) == (original.stat().st_uid, original.stat().st_gid)
    assert "docker compose up -d" in (folder / "README.md").read_text()


def test_two_bundles_on_one_host_keep_apart(certs, tmp_path):
    bundle(certs, tmp_path, "supernode-1")
    bundle(certs, tmp_path, "supernode-2")
    names = {render(tmp_path / node)["name"] for node in ("supernode-1", "supernode-2")}
    networks = {render(tmp_path / node)["networks"]["flower"]["name"] for node in ("supernode-1", "supernode-2")}
    assert len(names) == 2 and len(networks) == 2


def test_the_env_file_names_every_knob_of_the_examples(certs, tmp_path):
    bundle(certs, tmp_path, "supernode-1", "--site-data", "--gpu")
    knobs = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$", re.M)
    env = dict(knobs.findall((tmp_path / "supernode-1/.env").read_text()))
    assert set(env) == set(dict(knobs.findall((ROOT / "docker/client.env.example").read_text())))
    assert env["TORCH"] == "cuda" and env["PARTITION_ID"] == "" and env["SITE_DATA"].startswith("/")
    supernode = render(tmp_path / "supernode-1", {"SITE_DATA": "/srv/data"})["services"]["supernode"]
    assert supernode["image"].endswith("-cuda") and supernode["deploy"]["resources"]["reservations"]["devices"]
    assert {"source": "/srv/data", "target": "/data"}.items() <= next(
        v for v in supernode["volumes"] if v["target"] == "/data").items()


def test_a_new_node_gets_a_key_and_an_existing_bundle_is_never_overwritten(certs, tmp_path):
    made = bundle(certs, tmp_path, "hospital-c")
    assert "certs/supernode.key" in made["files"]
    assert (certs / "server/supernodes/hospital-c.pub").exists()  # for the server to register
    again = sh(sys.executable, "scripts/site_bundle.py", "hospital-c", "--superlink", SUPERLINK, "--certs",
               str(certs), "--out", str(tmp_path), check=False)
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a key to uid 49998")
def test_as_root_the_key_keeps_the_supernodes_owner(certs, tmp_path):
    bundle(certs, tmp_path, "supernode-2")
    assert (tmp_path / "supernode-2/certs/supernode.key").stat().st_uid == 49998
