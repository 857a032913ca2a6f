"""Certificates and keys for a Flower deployment: a CA, the SuperLink's server
certificate, SuperNode authentication keys and the SuperExec shared secret.

Run it through `certs/make-certs.sh` (it finds a Python with `cryptography`, or
uses the SuperLink image). Commands:

  init [--san DNS:name|IP:addr ...] [--nodes N]   a new CA and everything below
  ensure [--san ...] [--nodes N]                  init if there is no CA yet, then add any
                                                  missing supernode-1..N (compose.yaml's init)
  server [--san ...]                              a new server certificate, same CA (rotation)
  node NAME                                       a new SuperNode key pair
  show                                            every certificate's names and expiry

Output (default certs/out/), one folder per machine, ready to copy:

  ca/          ca.crt, ca.key: the CA. Keep ca.key offline; no container needs it.
  server/      ca.crt, superlink.crt, superlink.key, superexec.secret,
               supernodes/<name>.pub: the SuperLink machine's files
  <name>/      ca.crt, supernode.key, supernode.pub: one SuperNode machine's files
  user/        ca.crt: what `flwr run` on a user's machine needs

Private keys and the secret are written with mode 0600. Run as root (sudo, or
in a container), key files are given to uid/gid 49999, the user every image runs
as (`--owner` changes that). Nothing is ever overwritten unless --force.
"""

from __future__ import annotations

import argparse
import datetime
import json
import ipaddress
import os
import re
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the SuperLink is reached by on its own machine: the Compose service name
# (SuperExec, SuperNodes of the local compose.yaml) and loopback (health probe,
# an SSH tunnel to the Control API). Always in the certificate.
INTERNAL_SANS = ("DNS:superlink", "DNS:localhost", "IP:127.0.0.1")
CONTAINER_UID = 49999  # the `flwr` user of every image
CA_DAYS, SERVER_DAYS = 3650, 397  # 397: the longest lifetime browsers and most policies accept
NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class CertError(Exception):
    """Something the operator must fix; the message says what."""


def say(text: str, level: str = "info", stream=sys.stdout) -> None:
    """Plain lines for a person; JSON Lines where LOG_FORMAT=json (in containers)."""
    if os.getenv("LOG_FORMAT", "console") != "json":
        print(text, file=stream)
        return
    now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    for line in text.splitlines():
        # One write per line, newline included: nothing else's output can land inside it.
        stream.write(json.dumps({"timestamp": now, "level": level, "event": line.strip(), "logger": "certs"}) + "\n")
        stream.flush()


def parse_san(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    if kind == "DNS" and re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", value):
        return x509.DNSName(value)
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise CertError(f"bad SAN {text!r}: write DNS:<name> or IP:<address>, e.g. DNS:flower.example.org")


def split_sans(values: list[str]) -> list[str]:
    """--san may repeat and each may hold a comma-separated list (as $SUPERLINK_SANS does)."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


class Store:
    """The output folder: writes files, never overwriting unless forced."""

    def __init__(self, root: Path, force: bool, owner: tuple[int, int] | None) -> None:
        self.root, self.force, self.owner = root, force, owner

    def path(self, relative: str) -> Path:
        return self.root / relative

    def refuse_existing(self, *relatives: str) -> None:
        existing = [r for r in relatives if self.path(r).exists()]
        if existing and not self.force:
            raise CertError(f"{', '.join(str(self.path(r)) for r in existing)} already exist(s): "
                            "nothing was changed. Pass --force to replace them.")

    def write(self, relative: str, data: bytes, private: bool = False, for_container: bool = True) -> None:
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        # Created with its final mode (no window in which a key is world-readable).
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if private and for_container and self.owner:
            os.chown(target, *self.owner)

    def read_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.path("ca/ca.crt").read_bytes())
            key = serialization.load_pem_private_key(self.path("ca/ca.key").read_bytes(), None)
        except FileNotFoundError as exc:
            raise CertError(f"{exc.filename} is missing: run `init` first (or copy the CA here)") from exc
        return cert, key


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: str, issuer: x509.Name | None, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flowerdock"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(store: Store, days: int) -> None:
    store.refuse_existing("ca/ca.crt", "ca/ca.key")
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (_builder("flowerdock CA", None, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    store.write("ca/ca.key", pem_key(key), private=True, for_container=False)
    for folder in ("ca", "server", "user"):
        store.write(f"{folder}/ca.crt", pem_cert(cert))


def make_server(store: Store, sans: list[str], days: int) -> list[str]:
    store.refuse_existing("server/superlink.crt", "server/superlink.key")
    ca_cert, ca_key = store.read_ca()
    names = list(dict.fromkeys([*sans, *INTERNAL_SANS]))  # operator's first, no duplicates
    general_names = [parse_san(n) for n in names]
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (_builder("superlink", ca_cert.subject, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    store.write("server/superlink.key", pem_key(key), private=True)
    store.write("server/superlink.crt", pem_cert(cert))
    store.write("server/ca.crt", pem_cert(ca_cert))
    return names


def make_secret(store: Store) -> None:
    store.refuse_existing("server/superexec.secret")
    store.write("server/superexec.secret", secrets.token_hex(32).encode(), private=True)


def make_node(store: Store, name: str) -> None:
    if not NODE_NAME.fullmatch(name) or name in ("ca", "server", "user"):
        raise CertError(f"bad node name {name!r}: lowercase letters, digits, '.', '_', '-' "
                        "(not ca/server/user), e.g. supernode-3")
    store.refuse_existing(f"{name}/supernode.key", f"server/supernodes/{name}.pub")
    ca_cert, _ = store.read_ca()
    # Flower 1.42 reads SuperNode keys in OpenSSH format, on a NIST curve.
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH) + f" {name}\n".encode()
    store.write(f"{name}/supernode.key", private, private=True)
    store.write(f"{name}/supernode.pub", public)
    store.write(f"{name}/ca.crt", pem_cert(ca_cert))
    store.write(f"server/supernodes/{name}.pub", public)


def show(store: Store) -> int:
    """Print every certificate's names and expiry; exit 1 if one expires within 30 days."""
    now = datetime.datetime.now(datetime.timezone.utc)
    certs = sorted(p for p in store.root.rglob("*.crt") if p.parent.name in ("ca", "server"))
    if not certs:
        raise CertError(f"no certificates under {store.root}: run `init` first")
    soon = False
    for path in certs:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        days_left = (cert.not_valid_after_utc - now).days
        soon |= days_left < 30
        try:
            sans = ", ".join(str(n.value) for n in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = "-"
        say(f"{path.relative_to(store.root)}: {cert.subject.rfc4514_string()}; names: {sans}; "
              f"expires {cert.not_valid_after_utc:%Y-%m-%d} ({days_left} days)"
              + ("  <-- renew soon" if days_left < 30 else ""))
    return 1 if soon else 0


def instructions(store: Store, nodes: list[str], sans: list[str] | None) -> str:
    # Run in a container (make-certs.sh), the folder has another name on the host.
    root = os.getenv("CERTS_OUT_SHOWN") or store.root
    lines = [f"Made under {root}:"]
    if sans:
        lines.append(f"  server certificate for: {', '.join(sans)}")
    lines += [
        f"  {root}/server/  -> the SuperLink machine (docker/compose.server.yaml: SERVER_CERTS_DIR)",
        f"  {root}/user/    -> every machine that submits runs (`flwr run`): ca.crt",
    ]
    lines += [f"  {root}/{n}/  -> SuperNode machine {n} (docker/compose.client.yaml: NODE_CERTS_DIR)"
              for n in nodes]
    lines.append(f"  {root}/ca/ca.key: keep offline; needed only to make new certificates")
    if store.owner is None and os.getuid() != CONTAINER_UID:
        lines.append(f"  note: key files belong to uid {os.getuid()}; the containers run as uid {CONTAINER_UID}: "
                     f"run this with sudo, or `sudo chown {CONTAINER_UID}:{CONTAINER_UID}` the *.key and *.secret files")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["init", "ensure", "server", "node", "show"])
    parser.add_argument("name", nargs="?", help="node name, for `node`")
    parser.add_argument("--out", type=Path, default=Path(os.getenv("CERTS_OUT", Path(__file__).parent / "out")))
    parser.add_argument("--san", action="append", default=[],
                        help="a name the SuperLink is reached by: DNS:<name> or IP:<address> "
                             "(repeat, or comma-separate; default $SUPERLINK_SANS)")
    parser.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs made by init (default 2)")
    parser.add_argument("--days", type=int, default=SERVER_DAYS, help="server certificate lifetime")
    parser.add_argument("--owner", help="uid:gid for key files (default 49999:49999 when run as root)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)

    owner = None
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        owner = (int(uid), int(gid or uid))
    elif os.getuid() == 0:
        owner = (CONTAINER_UID, CONTAINER_UID)
    store = Store(args.out.resolve(), args.force, owner)
    sans = split_sans(args.san or [os.getenv("SUPERLINK_SANS", "")])

    if args.command == "show":
        return show(store)
    if args.command == "node":
        if not args.name:
            raise CertError("`node` needs a name, e.g. `node supernode-3`")
        make_node(store, args.name)
        say(instructions(store, [args.name], None))
        return 0
    if args.command == "server":
        names = make_server(store, sans, args.days)
        say(instructions(store, [], names))
        return 0
    if not 0 <= args.nodes <= 1000:
        raise CertError("--nodes must be between 0 and 1000")
    nodes = [f"supernode-{i}" for i in range(1, args.nodes + 1)]
    if args.command == "ensure" and store.path("ca/ca.crt").exists():
        missing = [n for n in nodes if not store.path(f"{n}/supernode.key").exists()]
        for node in missing:
            make_node(store, node)
        say(f"CA exists under {store.root}; new SuperNode keys: {', '.join(missing) or 'none'}")
        return 0
    # Check everything first: a refusal must leave the folder as it was.
    store.refuse_existing("ca/ca.crt", "ca/ca.key", "server/superlink.crt", "server/superlink.key",
                          "server/superexec.secret", *(f"{n}/supernode.key" for n in nodes))
    for san in sans:
        parse_san(san)
    make_ca(store, CA_DAYS)
    names = make_server(store, sans, args.days)
    make_secret(store)
    for node in nodes:
        make_node(store, node)
    say(instructions(store, nodes, names))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CertError as exc:
        say(f"error: {exc}", "error", sys.stderr)
        sys.exit(2)
