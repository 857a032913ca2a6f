"""certs/make_certs.py: what it makes, how it protects keys, what it refuses."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from tests.conftest import ROOT, json_lines

SCRIPT = str(ROOT / "certs" / "make_certs.py")
OTHER_UID = 4242  # neither root nor the containers' 49999: a step run without sudo

# Runs make_certs.py as OTHER_UID. The script and its imports are loaded while still root (a
# CI checkout may be readable by root only), then the process drops root for good and runs it.
AS_OTHER_UID = f"""
import os, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec")
exec(code, {{"__name__": "preload", "__file__": path}})
import cryptography.hazmat.backends.openssl  # imported lazily, by certificate verification
os.setgroups([]); os.setgid({OTHER_UID}); os.setuid({OTHER_UID})
sys.argv = sys.argv[1:]
exec(code, {{"__name__": "__main__", "__file__": path}})
"""


def make(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args, "--out", str(out), "--owner", f"{os.getuid()}:{os.getgid()}"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LOG_FORMAT": "console"})


def sudo_make(out, *args: str) -> subprocess.CompletedProcess:
    """As `sudo certs/make-certs.sh` runs it: root, key files given to uid 49999."""
    return subprocess.run([sys.executable, SCRIPT, *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LOG_FORMAT": "console"})


def make_as_other_uid(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", AS_OTHER_UID, SCRIPT, *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LOG_FORMAT": "json"})


def test_loading_the_script_loads_every_module_it_runs():
    # What make_as_other_uid relies on: loading make_certs.py (as AS_OTHER_UID does, from another
    # folder, so certs/ is not on sys.path) imports all of certlib/, so nothing is read later.
    load = (f"path = {SCRIPT!r}; exec(compile(open(path).read(), path, 'exec'), "
            "{'__name__': 'preload', '__file__': path}); import sys; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'certlib')))")
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    modules = {"certlib", *(f"certlib.{p.stem}" for p in (ROOT / "certs/certlib").glob("*.py") if p.stem != "__init__")}
    assert set(result.stdout.split()) == modules


def cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def dns_names(path) -> list[str]:
    return cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shared_out():
    """An output folder OTHER_UID can reach (pytest's tmp_path lies in a folder only root may enter)."""
    assert os.geteuid() == 0, "these tests become another uid to be refused: run them as root (CI does)"
    top = Path(tempfile.mkdtemp(prefix="certs-test-"))
    top.chmod(0o755)
    assert all(p.stat().st_mode & stat.S_IXOTH for p in top.parents), f"{top}: a parent is not world-searchable"
    yield top / "out"
    shutil.rmtree(top)


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
    assert "ensure --san" in refused.stderr  # the way to change names without a new CA
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


@pytest.mark.parametrize("args, verb, path, owner", [
    (["node", "supernode-3"], "write", "supernode-3/supernode.key", 0),
    (["ensure", "--nodes", "2"], "write", "supernode-2/supernode.key", 0),
    (["init", "--force", "--nodes", "1"], "write", "ca/ca.key", 0),
    (["server", "--force"], "read", "ca/ca.key", 0),
    (["ensure", "--san", "DNS:b.example.org"], "read", "server/superlink.key", 49999),
    (["show"], "read", "server", 0),  # made unreadable below
])
def test_a_step_without_sudo_after_one_with_it_gets_one_line_saying_what_to_do(shared_out, args, verb, path, owner):
    assert sudo_make(shared_out, "init", "--san", "DNS:a.example.org", "--nodes", "1").returncode == 0
    if args == ["show"]:
        (shared_out / "server").chmod(0o700)
    before = snapshot(shared_out)
    result = make_as_other_uid(shared_out, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = json_lines(result.stderr)  # one JSON line, like the rest of its output
    assert line["level"] == "error"
    message = line["event"]
    assert f"cannot {verb} {shared_out / path}: permission denied" in message, message
    assert f"belongs to uid {owner} and this runs as uid {OTHER_UID}" in message, message
    assert "run every make_certs step as the same user" in message and "use sudo again" in message, message
    assert f"sudo chown -R {OTHER_UID} {shared_out}" in message, message
    assert snapshot(shared_out) == before  # nothing half-written


def test_a_folder_it_cannot_create_names_the_fix(shared_out):
    shared_out.mkdir()  # made by root (`sudo mkdir`), empty
    result = make_as_other_uid(shared_out / "certs", "init")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = json_lines(result.stderr)
    assert f"cannot write {shared_out / 'certs/ca/ca.key'}: permission denied" in line["event"]
    assert f"sudo install -d -o {OTHER_UID} {shared_out / 'certs'}" in line["event"]


def test_an_out_that_is_a_file_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    for command in ("init", "show"):
        result = make(tmp_path / "out", command)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{tmp_path / 'out'}" in result.stderr and "Not a directory" in result.stderr


def test_ensure_keeps_a_server_certificate_that_has_the_names_asked_for(tmp_path):
    make(tmp_path, "init", "--nodes", "1", "--san", "DNS:a.example.org,IP:10.0.0.5")
    before = snapshot(tmp_path)
    # Same names in another order and case, then none asked (compose.yaml's certs service).
    for sans in (["--san", "IP:10.0.0.5", "--san", "DNS:A.example.org"], []):
        result = make(tmp_path, "ensure", "--nodes", "1", *sans)
        assert result.returncode == 0 and "server certificate kept" in result.stdout, result.stderr
        assert snapshot(tmp_path) == before


def test_ensure_reissues_the_server_certificate_when_its_names_change(tmp_path):
    make(tmp_path, "init", "--nodes", "1", "--san", "DNS:a.example.org")
    ca_before, key_before = (tmp_path / "ca/ca.crt").read_bytes(), (tmp_path / "server/superlink.key").read_bytes()
    result = make(tmp_path, "ensure", "--nodes", "1", "--san", "DNS:a.example.org,DNS:new.example.org")
    assert result.returncode == 0, result.stderr
    assert ("server certificate re-issued (same CA, same key): names were DNS:a.example.org, DNS:superlink, "
            "DNS:localhost, IP:127.0.0.1; now DNS:a.example.org, DNS:new.example.org, DNS:superlink, "
            "DNS:localhost, IP:127.0.0.1") in result.stdout
    server = cert(tmp_path / "server/superlink.crt")
    server.verify_directly_issued_by(cert(tmp_path / "ca/ca.crt"))
    assert dns_names(tmp_path / "server/superlink.crt") == ["a.example.org", "new.example.org",
                                                           "superlink", "localhost"]
    assert (tmp_path / "ca/ca.crt").read_bytes() == ca_before
    assert (tmp_path / "server/superlink.key").read_bytes() == key_before
    key = serialization.load_pem_private_key(key_before, None)
    assert server.public_key() == key.public_key()
    after = snapshot(tmp_path)
    again = make(tmp_path, "ensure", "--nodes", "1", "--san", "DNS:new.example.org,DNS:a.example.org")
    assert "server certificate kept" in again.stdout and snapshot(tmp_path) == after  # idempotent again


def test_ensure_will_not_replace_a_server_certificate_from_another_ca(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make(ours, "init", "--nodes", "0")
    make(theirs, "init", "--nodes", "0")
    for name in ("superlink.crt", "superlink.key"):
        shutil.copy(theirs / "server" / name, ours / "server" / name)
    before = snapshot(ours)
    result = make(ours, "ensure", "--nodes", "0", "--san", "DNS:new.example.org")
    assert result.returncode == 2 and "was not issued by" in result.stderr and "server --force" in result.stderr
    assert snapshot(ours) == before


def test_ensure_needs_the_ca_key_to_reissue_but_not_to_add_node_keys(tmp_path):
    make(tmp_path, "init", "--nodes", "1")
    (tmp_path / "ca/ca.key").rename(tmp_path / "ca.key.offline")  # kept offline, as advised
    assert make(tmp_path, "ensure", "--nodes", "2").returncode == 0
    assert (tmp_path / "supernode-2/supernode.key").exists()
    before = snapshot(tmp_path)
    result = make(tmp_path, "ensure", "--nodes", "2", "--san", "DNS:new.example.org")
    assert result.returncode == 2 and "bring the CA key back" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


def test_server_rotation_without_san_keeps_the_names_and_a_change_is_logged(tmp_path):
    make(tmp_path, "init", "--nodes", "0", "--san", "DNS:a.example.org")
    assert make(tmp_path, "server", "--force").returncode == 0  # renewal: names not retyped
    assert "a.example.org" in dns_names(tmp_path / "server/superlink.crt")
    result = make(tmp_path, "server", "--force", "--san", "DNS:b.example.org")
    assert "server certificate names changed: were DNS:a.example.org" in result.stdout
    assert dns_names(tmp_path / "server/superlink.crt") == ["b.example.org", "superlink", "localhost"]
