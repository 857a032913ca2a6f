"""Certificates and keys for a Flower deployment: a CA, the SuperLink's server
certificate, SuperNode authentication keys and the SuperExec shared secret.

Run it through `certs/make-certs.sh` (it finds a Python with `cryptography`, or
uses the SuperLink image). Commands:

  init [--san DNS:name|IP:addr ...] [--nodes N]   a new CA and everything below
  ensure [--san ...] [--nodes N]                  init if there is no CA yet, then add any
                                                  missing supernode-1..N (compose.yaml's init),
                                                  and re-issue the server certificate (same CA,
                                                  same key) when --san asks for other names
  server [--san ...]                              a new server certificate and key, same CA
                                                  (rotation; no --san: the current names)
  node NAME                                       a new SuperNode key pair
  revoke NAME                                     move server/supernodes/NAME.pub to server/revoked/
                                                  (register-supernodes then unregisters it)
  publisher                                       the key that signs apps (scripts/publish_app.py), and
                                                  trusted-entities.yaml in every SuperNode folder: those
                                                  SuperNodes then run signed apps only (docs/signed-apps.md)
                                                  (register-supernodes then unregisters it)
  ray [NAME] --san IP:addr ... [--subnet CIDR]    a Ray node certificate (default NAME: ray) for
                                                  every address a Ray node of the simulation's
                                                  cluster is dialled at, and the cluster's token
  show                                            every certificate's names and expiry

Output (default certs/out/), one folder per machine, ready to copy:

  ca/          ca.crt, ca.key: the CA. Keep ca.key offline; no container needs it.
  server/      ca.crt, superlink.crt, superlink.key, superexec.secret,
               supernodes/<name>.pub: the SuperLink machine's files
  <name>/      ca.crt, supernode.key, supernode.pub: one SuperNode machine's files
  user/        ca.crt: what `flwr run` on a user's machine needs
  ray/         ca.crt, ray.crt, ray.key, ray.token: Ray nodes (docs/ray.md); ca/ray.token
               keeps the cluster's token for the next `ray NAME`

Private keys and the secret are written with mode 0600. Run as root (sudo, or
in a container), key files are given to uid/gid 49999, the user every image runs
as (`--owner` changes that), and each supernode.key to uid 49998, the user a
SuperNode's Flower runs as, so that the ClientApp code beside it cannot read it
(`--node-owner`). Nothing is ever overwritten unless --force, except
the server certificate by `ensure` when the names asked for change.

A file or folder it cannot read or write (a step run without sudo after one run
with it) ends it with one line naming the path, its owner and the fix; exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import ipaddress
import os
import re
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the SuperLink is reached by on its own machine: the Compose service name
# (SuperExec, SuperNodes of the local compose.yaml) and loopback (health probe,
# an SSH tunnel to the Control API). Always in the certificate.
INTERNAL_SANS = ("DNS:superlink", "DNS:localhost", "IP:127.0.0.1")
CONTAINER_UID = 49999  # the `flwr` user of every image (and of ClientApp code)
# A SuperNode's key belongs to another user, the one its Flower daemon runs as: the
# ClientApps beside it (uid 49999, running whatever code a run ships) cannot read it
# (docker/supernode_entrypoint.py).
SUPERNODE_UID = 49998
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


def with_internal(sans: list[str]) -> list[str]:
    return list(dict.fromkeys([*sans, *INTERNAL_SANS]))  # operator's first, no duplicates


def san_text(name: x509.GeneralName) -> str:
    """A certificate's name written the way --san takes it."""
    kind = {x509.DNSName: "DNS", x509.IPAddress: "IP"}.get(type(name), type(name).__name__)
    return f"{kind}:{name.value}"


def cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [san_text(n) for n in names]


def same_names(a: list[str], b: list[str]) -> bool:
    """Order, DNS case and IP spelling do not matter to a TLS client, so they never cause a re-issue."""
    def canonical(name: str) -> str:
        try:
            return san_text(parse_san(name)).lower()
        except CertError:  # a name this tool would not write (someone else's certificate): as it is
            return name
    return {canonical(n) for n in a} == {canonical(n) for n in b}


class Store:
    """The output folder: writes files, never overwriting unless forced."""

    def __init__(self, root: Path, force: bool, owner: tuple[int, int] | None,
                 node_owner: tuple[int, int] | None = None) -> None:
        self.root, self.force, self.owner = root, force, owner
        self.node_owner = node_owner or owner

    def path(self, relative: str | Path) -> Path:
        return self.root / relative

    def shown(self, path: str | Path) -> str:
        """A path as the operator knows it: under CERTS_OUT_SHOWN in a container, else from the cwd."""
        path = Path(path)
        if os.getenv("CERTS_OUT_SHOWN") and path.is_relative_to(self.root):
            return str(Path(os.environ["CERTS_OUT_SHOWN"]) / path.relative_to(self.root))
        cwd = Path.cwd()
        inside = path.is_relative_to(cwd) and cwd != Path(cwd.anchor)  # from /, keep the leading slash
        return str(path.relative_to(cwd)) if inside else str(path)

    def failed(self, exc: OSError, verb: str, target: Path | None = None) -> CertError:
        """One line for a file or folder it cannot use, instead of a traceback: which, whose, what to run."""
        target = Path(target or exc.filename or self.root)
        what = f"cannot {verb} {self.shown(target)}"
        if isinstance(exc, FileNotFoundError):
            return CertError(f"{what}: {self.shown(exc.filename or target)} does not exist")
        if exc.errno not in (errno.EACCES, errno.EPERM) or os.getuid() == 0:
            return CertError(f"{what}: {exc.strerror or exc}")
        # Whose it is: the folder written into (a write replaces the file), or what refused the read.
        blocker, owner = owner_of(target.parent if verb == "write" else Path(exc.filename or target))
        me = os.getuid()
        if owner == me:
            fix = f"it is yours but its mode forbids it: chmod -R u+rwX {self.shown(self.root)}"
        elif not blocker.is_relative_to(self.root):
            fix = f"choose another --out, or make it yours: sudo install -d -o {me} {self.shown(self.root)}"
        else:
            # Run as root, the tool gives key files to the containers' uid: sudo made those too.
            made_by = ("with sudo: use sudo again" if owner in (0, CONTAINER_UID)
                       else f"as uid {owner}: run as that user")
            fix = (f"run every make_certs step as the same user (these files were made {made_by}), "
                   f"or fix ownership with: sudo chown -R {me} {self.shown(self.root)}")
        return CertError(f"{what}: permission denied; {self.shown(blocker)} belongs to uid {owner} "
                         f"and this runs as uid {me} - {fix}")

    def exists(self, relative: str) -> bool:
        try:
            return self.path(relative).exists()
        except OSError as exc:  # a folder on the way it may not enter
            raise self.failed(exc, "read", self.path(relative)) from exc

    def refuse_existing(self, *relatives: str, hint: str = "") -> None:
        existing = [r for r in relatives if self.exists(r)]
        if existing and not self.force:
            raise CertError(f"{', '.join(self.shown(self.path(r)) for r in existing)} already exist(s): "
                            f"nothing was changed. Pass --force to replace them.{hint}")

    def write(self, relative: str, data: bytes, private: bool = False, for_container: bool = True,
              owner: tuple[int, int] | None = None) -> None:
        target = self.path(relative)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(target.parent, 0o755)
            # Created with its final mode (no window in which a key is world-readable).
            target.unlink(missing_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise self.failed(exc, "write", target) from exc
        owner = owner or self.owner
        if private and for_container and owner:
            try:
                os.chown(target, *owner)
            except PermissionError as exc:
                raise CertError(f"cannot give {self.shown(target)} to uid {owner[0]}: only root can - "
                                "run it with sudo, or leave out --owner") from exc

    def read(self, relative: str | Path) -> bytes:
        try:
            return self.path(relative).read_bytes()
        except OSError as exc:
            raise self.failed(exc, "read", self.path(relative)) from exc

    def cert(self, relative: str | Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.read(relative))
        except ValueError as exc:
            raise CertError(f"{self.shown(self.path(relative))} is not a PEM certificate") from exc

    def key(self, relative: str) -> ec.EllipticCurvePrivateKey:
        try:
            return serialization.load_pem_private_key(self.read(relative), None)
        except (ValueError, TypeError) as exc:
            raise CertError(f"{self.shown(self.path(relative))} is not an unencrypted PEM private key") from exc

    def read_ca(self, with_key: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | None]:
        # Only signing needs ca.key: node keys can be made while it is kept offline, as advised.
        for relative in ("ca/ca.crt", "ca/ca.key") if with_key else ("ca/ca.crt",):
            if not self.exists(relative):
                raise CertError(f"{self.shown(self.path(relative))} is missing: "
                                "run `init` first (or copy the CA here)")
        return self.cert("ca/ca.crt"), self.key("ca/ca.key") if with_key else None

    def crt_files(self) -> list[Path]:
        """ca/ and server/ certificates, at any depth; unlike rglob, an unreadable folder is an error."""
        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # no folder yet: no certificates
                raise self.failed(exc, "read")
        found = []
        for folder, _, files in os.walk(self.root, onerror=fail):
            if Path(folder).name in ("ca", "server"):
                found += [Path(folder, f) for f in files if f.endswith(".crt")]
        return sorted(found)


def owner_of(path: Path) -> tuple[Path, int]:
    """The path, or the nearest folder above it that exists and can be looked at, and its owner."""
    for candidate in (path, *path.parents):
        try:
            return candidate, candidate.stat().st_uid
        except OSError:
            continue
    return path, -1


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


def sign_server(store: Store, public_key, names: list[str], days: int) -> tuple[x509.Certificate, x509.Certificate]:
    ca_cert, ca_key = store.read_ca()
    cert = (_builder("superlink", ca_cert.subject, public_key, days)
            .add_extension(x509.SubjectAlternativeName([parse_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return cert, ca_cert


def make_server(store: Store, sans: list[str], days: int) -> list[str]:
    store.refuse_existing("server/superlink.crt", "server/superlink.key")
    names = with_internal(sans)
    key = ec.generate_private_key(ec.SECP384R1())
    cert, ca_cert = sign_server(store, key.public_key(), names, days)
    store.write("server/superlink.key", pem_key(key), private=True)
    store.write("server/superlink.crt", pem_cert(cert))
    store.write("server/ca.crt", pem_cert(ca_cert))
    return names


def rotate_server(store: Store, sans: list[str], days: int) -> list[str]:
    """`server`: a new certificate and key. Without --san it keeps the names the current one
    carries, so a renewal for expiry cannot silently drop the names clients use."""
    old = cert_sans(store.cert("server/superlink.crt")) if store.exists("server/superlink.crt") else None
    if not sans and old:
        sans = [n for n in old if n not in INTERNAL_SANS]
    names = make_server(store, sans, days)
    if old is not None and not same_names(old, names):
        say(f"server certificate names changed: were {', '.join(old)}; now {', '.join(names)}")
    return names


def ensure_server(store: Store, sans: list[str], days: int) -> str:
    """`ensure`'s server certificate: kept while it carries exactly the names asked for, else
    re-issued by the same CA for the same key. The same key, because nothing says the key is
    compromised (that is `server --force`'s job), the SuperLink's key file stays as it is, and
    only one file is rewritten, so an interrupted run cannot leave a mismatched cert/key pair."""
    names = with_internal(sans)
    if not store.exists("server/superlink.key"):
        if store.exists("server/superlink.crt"):
            raise CertError(f"{store.shown(store.path('server/superlink.key'))} is missing, so its certificate "
                            "is useless: for a new pair, run certs/make-certs.sh server --force --san ...")
        make_server(store, sans, days)
        say(f"server certificate and key were missing: issued for {', '.join(names)}")
        return "server certificate issued"
    old = []  # a key without its certificate (an interrupted run): sign it again
    if store.exists("server/superlink.crt"):
        current = store.cert("server/superlink.crt")
        old = cert_sans(current)
        # No names asked (compose.yaml's certs service, a bare `ensure`): nothing to compare with,
        # and an unset $SUPERLINK_SANS must not strip the names clients use.
        if not sans or same_names(old, names):
            return "server certificate kept"
        refuse_foreign(store, current, old, names)
    if not store.exists("ca/ca.key"):
        raise CertError(f"the server certificate needs {', '.join(names)} (it has {', '.join(old) or 'none'}), "
                        f"and {store.shown(store.path('ca/ca.key'))} is not here to sign it: bring the CA key "
                        "back (it is kept offline) and run ensure again")
    cert, _ = sign_server(store, store.key("server/superlink.key").public_key(), names, days)
    store.write("server/superlink.crt", pem_cert(cert))
    was = ", ".join(old) or "none (it was missing)"
    say(f"server certificate re-issued (same CA, same key): names were {was}; now {', '.join(names)}. "
        "Restart the SuperLink (and gateway) to use it")
    return "server certificate re-issued"


def refuse_foreign(store: Store, current: x509.Certificate, old: list[str], names: list[str]) -> None:
    """Someone else's certificate (a public CA's?): replacing it with ours could lock clients out."""
    ca_cert, _ = store.read_ca(with_key=False)
    try:
        current.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertError(f"{store.shown(store.path('server/superlink.crt'))} was not issued by "
                        f"{store.shown(store.path('ca/ca.crt'))}, so ensure will not replace it "
                        f"(it has {', '.join(old)}; asked: {', '.join(names)}). To replace it with one "
                        "from this CA: certs/make-certs.sh server --force --san ...") from exc


def make_secret(store: Store) -> None:
    store.refuse_existing("server/superexec.secret")
    store.write("server/superexec.secret", secrets.token_hex(32).encode(), private=True)
    revoked_folder(store)


def revoked_folder(store: Store) -> None:
    """server/revoked/, empty until a node is revoked: the server mounts it (register-supernodes)."""
    folder = store.path("server/revoked")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
    except OSError as exc:
        raise store.failed(exc, "write", folder) from exc


def make_node(store: Store, name: str) -> None:
    if not NODE_NAME.fullmatch(name) or name in ("ca", "server", "user"):
        raise CertError(f"bad node name {name!r}: lowercase letters, digits, '.', '_', '-' "
                        "(not ca/server/user), e.g. supernode-3")
    store.refuse_existing(f"{name}/supernode.key", f"server/supernodes/{name}.pub")
    ca_cert, _ = store.read_ca(with_key=False)
    # Flower 1.42 reads SuperNode keys in OpenSSH format, on a NIST curve.
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH) + f" {name}\n".encode()
    store.write(f"{name}/supernode.key", private, private=True, owner=store.node_owner)
    store.write(f"{name}/supernode.pub", public)
    store.write(f"{name}/ca.crt", pem_cert(ca_cert))
    store.write(f"server/supernodes/{name}.pub", public)
    revoked_folder(store)
    if store.exists(TRUSTED_ENTITIES):  # a federation that runs signed apps only: this node too
        store.write(f"{name}/trusted-entities.yaml", store.read(TRUSTED_ENTITIES))


# --- The app publisher's key (docs/signed-apps.md) ------------------------------------

TRUSTED_ENTITIES = "publisher/trusted-entities.yaml"


def public_key_id(public: bytes) -> str:
    """Flower's trusted-entities name a key by an ID of the publisher's choosing; this one is
    derived from the key itself, so it changes when the key does."""
    import hashlib

    return "fpk_" + hashlib.sha256(public).hexdigest()[:32]


def make_publisher(store: Store) -> str:
    """publisher/publisher.key (Ed25519, OpenSSH: what Flower's FAB signatures use) and
    trusted-entities.yaml (Flower's --trusted-entities format), also into every SuperNode folder."""
    store.refuse_existing("publisher/publisher.key", hint=" A new key means every SuperNode's "
                          "trusted-entities.yaml changes and every app must be signed again.")
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    key_id = public_key_id(public)
    entities = f"# SuperNodes run only FABs signed by these keys (flower-supernode --trusted-entities)\n" \
               f"{key_id}: \"{public.decode()} flowerdock-publisher\"\n".encode()
    store.write("publisher/publisher.key", key.private_bytes(serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()), private=True, for_container=False)
    store.write(TRUSTED_ENTITIES, entities)
    for folder in sorted(p.parent.name for p in store.root.glob("*/supernode.key")):
        store.write(f"{folder}/trusted-entities.yaml", entities)
    return key_id


def revoke_node(store: Store, name: str) -> None:
    """Moves the node's public key from server/supernodes/ to server/revoked/: the next
    run of register-supernodes unregisters it, and no later run registers it again."""
    wanted, revoked = f"server/supernodes/{name}.pub", f"server/revoked/{name}.pub"
    if not store.exists(wanted):
        if store.exists(revoked):
            raise CertError(f"{name} is revoked already ({store.shown(store.path(revoked))})")
        raise CertError(f"no key {store.shown(store.path(wanted))}: `show` lists the certificates, "
                        "`ls server/supernodes/` the nodes")
    store.write(revoked, store.read(wanted))
    try:
        store.path(wanted).unlink()
    except OSError as exc:
        raise store.failed(exc, "write", store.path(wanted)) from exc


# --- Ray nodes (docs/ray.md) ----------------------------------------------------------

# Ray's gRPC clients check the server's name against the address they dial, and Ray
# dials every node by its IP: a Ray certificate names every address a node has.
RAY_INTERNAL_SANS = ("DNS:localhost", "IP:127.0.0.1")
MAX_RAY_SUBNET = 256  # addresses one certificate lists (a /24)


def subnet_sans(cidrs: list[str]) -> list[str]:
    """Every host address of each subnet, for nodes whose IPs Docker picks (`--scale`)."""
    names = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise CertError(f"bad --subnet {cidr!r} ({exc}): write a network such as 10.213.47.0/26") from None
        if network.num_addresses > MAX_RAY_SUBNET:
            raise CertError(f"--subnet {cidr} has {network.num_addresses} addresses: at most {MAX_RAY_SUBNET} "
                            "(a /24), each written into the certificate")
        names += [f"IP:{ip}" for ip in network.hosts()]
    return names


def ray_token(store: Store) -> bytes:
    """The cluster's token (RAY_AUTH_MODE=token): made once, kept in ca/ for the next node."""
    if not store.exists("ca/ray.token"):
        store.write("ca/ray.token", secrets.token_hex(32).encode(), private=True, for_container=False)
    return store.read("ca/ray.token")


def make_ray_node(store: Store, name: str, sans: list[str], days: int) -> list[str]:
    """NAME/: a certificate for both ends of Ray's mutual TLS (serverAuth and clientAuth),
    the CA, and the cluster's token. Only these certificates open the Ray cluster: the
    SuperLink's is serverAuth alone, which a Ray node refuses from a client."""
    if not NODE_NAME.fullmatch(name) or name in ("ca", "server", "user"):
        raise CertError(f"bad Ray node name {name!r}: lowercase letters, digits, '.', '_', '-' "
                        "(not ca/server/user), e.g. ray or ray-host-2")
    if not any(n.startswith("IP:") for n in sans):
        raise CertError("a Ray certificate needs the addresses its nodes are dialled at: --san IP:<address> "
                        "(each host's, across machines) or --subnet <CIDR> (one engine's compose network)")
    store.refuse_existing(f"{name}/ray.crt", f"{name}/ray.key")
    ca_cert, ca_key = store.read_ca()
    names = list(dict.fromkeys([*sans, *RAY_INTERNAL_SANS]))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (_builder(f"ray {name}", ca_cert.subject, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName([parse_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    store.write(f"{name}/ray.key", pem_key(key), private=True)
    store.write(f"{name}/ray.crt", pem_cert(cert))
    store.write(f"{name}/ca.crt", pem_cert(ca_cert))
    store.write(f"{name}/ray.token", ray_token(store), private=True)
    return names


def show(store: Store) -> int:
    """Print every certificate's names and expiry; exit 1 if one expires within 30 days."""
    now = datetime.datetime.now(datetime.timezone.utc)
    certs = store.crt_files()
    if not certs:
        raise CertError(f"no certificates under {store.shown(store.root)}: run `init` first")
    soon = False
    for path in certs:
        cert = store.cert(path)
        days_left = (cert.not_valid_after_utc - now).days
        soon |= days_left < 30
        sans = ", ".join(n.partition(":")[2] for n in cert_sans(cert)) or "-"
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
        lines.append(f"  note: key files belong to uid {os.getuid()}; the containers read them as uid {CONTAINER_UID} "
                     f"(a SuperNode's supernode.key: {SUPERNODE_UID}): run this with sudo, or `sudo chown "
                     f"{CONTAINER_UID}:{CONTAINER_UID}` the server's *.key and *.secret files and "
                     f"`sudo chown {SUPERNODE_UID}:{SUPERNODE_UID}` each supernode.key")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["init", "ensure", "server", "node", "revoke", "publisher", "show", "ray"])
    parser.add_argument("name", nargs="?", help="node name, for `node`, `revoke` and `ray`")
    parser.add_argument("--out", type=Path, default=Path(os.getenv("CERTS_OUT", Path(__file__).parent / "out")))
    parser.add_argument("--san", action="append", default=[],
                        help="a name the SuperLink is reached by: DNS:<name> or IP:<address> "
                             "(repeat, or comma-separate; default $SUPERLINK_SANS)")
    parser.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs made by init (default 2)")
    parser.add_argument("--days", type=int, default=SERVER_DAYS, help="server certificate lifetime")
    parser.add_argument("--owner", help="uid:gid for key files (default 49999:49999 when run as root)")
    parser.add_argument("--node-owner", help="uid:gid for SuperNode keys (default 49998:49998 when run as "
                                              "root: not the ClientApps' uid)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--subnet", action="append", default=[],
                        help="ray: every host address of this network (a compose network's subnet)")
    args = parser.parse_args(argv)

    owner = parse_owner("--owner", args.owner) or ((CONTAINER_UID,) * 2 if os.getuid() == 0 else None)
    node_owner = parse_owner("--node-owner", args.node_owner) or ((SUPERNODE_UID,) * 2 if os.getuid() == 0 else None)
    store = Store(args.out.resolve(), args.force, owner, node_owner)
    sans = split_sans(args.san or [os.getenv("SUPERLINK_SANS", "")])
    for san in sans:  # every command: a typo is reported before anything is written
        parse_san(san)
    try:
        return run(args, store, sans)
    except OSError as exc:  # one not met where files are read or written: still one line, no traceback
        raise store.failed(exc, "use") from exc


def parse_owner(flag: str, value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    uid, _, gid = value.partition(":")
    if not (uid.isdigit() and (gid or uid).isdigit()):
        raise CertError(f"bad {flag} {value!r}: write uid:gid in numbers, e.g. 49999:49999")
    return int(uid), int(gid or uid)


def run(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    if args.command == "show":
        return show(store)
    if args.command == "publisher":
        key_id = make_publisher(store)
        say(f"Made {store.shown(store.path('publisher'))}/: publisher.key (keep it with the CA key: it decides "
            f"what code every site runs) and trusted-entities.yaml ({key_id}), also in every SuperNode folder: "
            "copy those to their machines; sign apps with scripts/publish_app.py")
        return 0
    if args.command in ("revoke", "node") and not args.name:
        raise CertError(f"`{args.command}` needs a node name, e.g. `{args.command} supernode-3`")
    if args.command == "revoke":
        revoke_node(store, args.name)
        say(f"moved {args.name}.pub to {store.shown(store.path('server/revoked'))}/: copy server/ to the "
            "server and run register-supernodes there; the node is refused at its next request")
        return 0
    if args.command == "node":
        make_node(store, args.name)
        say(instructions(store, [args.name], None))
        return 0
    if args.command == "ray":
        name = args.name or "ray"
        # The names of Ray nodes only: $SUPERLINK_SANS, the SuperLink's, is no default here.
        asked = [*split_sans(args.san), *subnet_sans(args.subnet)]
        make_ray_node(store, name, asked, args.days)
        shown = ", ".join(asked) if len(asked) <= 4 else f"{asked[0]} .. {asked[-1]} ({len(asked)} names)"
        say(f"Made {store.shown(store.path(name))}/: ray.crt for {shown}, with ca.crt, ray.key, ray.token "
            "-> every Ray node of the cluster (docs/ray.md: RAY_CERTS_DIR)")
        return 0
    if args.command == "server":
        names = rotate_server(store, sans, args.days)
        say(instructions(store, [], names))
        return 0
    if not 0 <= args.nodes <= 1000:
        raise CertError("--nodes must be between 0 and 1000")
    nodes = [f"supernode-{i}" for i in range(1, args.nodes + 1)]
    if args.command == "ensure" and store.exists("ca/ca.crt"):
        server = ensure_server(store, sans, args.days)  # first: its refusal leaves the folder as it was
        missing = [n for n in nodes if not store.exists(f"{n}/supernode.key")]
        for node in missing:
            make_node(store, node)
        say(f"CA exists under {store.shown(store.root)}; {server}; "
            f"new SuperNode keys: {', '.join(missing) or 'none'}")
        return 0
    # Check everything first: a refusal must leave the folder as it was.
    store.refuse_existing("ca/ca.crt", "ca/ca.key", "server/superlink.crt", "server/superlink.key",
                          "server/superexec.secret", *(f"{n}/supernode.key" for n in nodes),
                          hint=" To change only the server certificate's names, keeping the CA and "
                               "every key: certs/make-certs.sh ensure --san ...")
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
