"""certs/make_certs.py: what it makes, how it protects keys, what it refuses."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from tests.conftest import ROOT

SCRIPT = str(ROOT / "certs" / "make_certs.py")


def make(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args, "--out", str(out), "--owner", f"{os.getuid()}:{os.getgid()}"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LOG_FORMAT": "console"})


def cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_a_ca_a_server_certificate_node_keys_and_a_secret(tmp_path):
    result = make(tmp_path, "init", "--san", "DNS:flower.example.org,IP:10.0.0.5", "--nodes", "2")
    assert result.returncode == 0, result.stderr
    ca, server = cert(tmp_path / "ca/ca.crt"), cert(tmp_path / "server/superlink.crt")
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["flower.example.org", "superlink", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"),
                                                          ipaddress.ip_address("127.0.0.1")]
    for node in ("supernode-1", "supernode-2"):
        key = load_ssh_private_key((tmp_path / node / "supernode.key").read_bytes(), None)
        registered = load_ssh_public_key((tmp_path / "server/supernodes" / f"{node}.pub").read_bytes())
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == registered
        assert (tmp_path / node / "ca.crt").read_bytes() == (tmp_path / "ca/ca.crt").read_bytes()
    assert len((tmp_path / "server/superexec.secret").read_bytes()) == 64
    assert "supernode-2/" in result.stdout  # says what goes where


def test_private_material_is_readable_by_its_owner_only(tmp_path):
    make(tmp_path, "init", "--nodes", "1")
    private = ["ca/ca.key", "server/superlink.key", "server/superexec.secret", "supernode-1/supernode.key"]
    for relative in private:
        assert stat.S_IMODE((tmp_path / relative).stat().st_mode) == 0o600, relative
    assert stat.S_IMODE((tmp_path / "user/ca.crt").stat().st_mode) == 0o644


def test_nothing_is_overwritten_without_force(tmp_path):
    make(tmp_path, "init", "--nodes", "1")
    before = (tmp_path / "ca/ca.key").read_bytes()
    refused = make(tmp_path, "init", "--nodes", "1")
    assert refused.returncode == 2 and "already exist" in refused.stderr and "--force" in refused.stderr
    assert (tmp_path / "ca/ca.key").read_bytes() == before
    assert make(tmp_path, "init", "--nodes", "1", "--force").returncode == 0
    assert (tmp_path / "ca/ca.key").read_bytes() != before


def test_server_rotation_keeps_the_ca(tmp_path):
    make(tmp_path, "init", "--nodes", "0")
    ca_before = (tmp_path / "ca/ca.crt").read_bytes()
    assert make(tmp_path, "server", "--san", "DNS:new.example.org").returncode == 2  # exists: refused
    assert make(tmp_path, "server", "--san", "DNS:new.example.org", "--force").returncode == 0
    server = cert(tmp_path / "server/superlink.crt")
    server.verify_directly_issued_by(cert(tmp_path / "ca/ca.crt"))
    assert (tmp_path / "ca/ca.crt").read_bytes() == ca_before
    assert "new.example.org" in server.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_ensure_adds_only_missing_node_keys(tmp_path):
    make(tmp_path, "ensure", "--nodes", "1")
    key_before = (tmp_path / "supernode-1/supernode.key").read_bytes()
    result = make(tmp_path, "ensure", "--nodes", "3")
    assert result.returncode == 0 and "supernode-2, supernode-3" in result.stdout
    assert (tmp_path / "supernode-1/supernode.key").read_bytes() == key_before


def test_show_lists_expiry(tmp_path):
    make(tmp_path, "init", "--nodes", "0", "--san", "DNS:a.example.org")
    result = make(tmp_path, "show")
    assert result.returncode == 0
    assert "server/superlink.crt" in result.stdout and "a.example.org" in result.stdout and "days)" in result.stdout
    make(tmp_path, "server", "--force", "--days", "10")
    assert make(tmp_path, "show").returncode == 1  # expires within 30 days: renew


@pytest.mark.parametrize("args, message", [
    (["init", "--san", "flower.example.org"], "write DNS:<name> or IP:<address>"),
    (["init", "--san", "IP:999.1.1.1"], "bad SAN"),
    (["node", "../escape"], "bad node name"),
    (["node", "supernode-9"], "run `init` first"),
])
def test_bad_input_is_refused_with_what_to_do(tmp_path, args, message):
    result = make(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "ca").exists()
