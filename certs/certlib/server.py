"""The SuperLink machine's files: its TLS certificate and key (made, rotated, or re-issued
for new names) and the SuperExec shared secret."""

from __future__ import annotations

import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certlib.certificates import SERVER_ONLY, new_key, pem_cert, pem_key, sign_leaf
from certlib.messages import CertError, say
from certlib.names import INTERNAL_SANS, cert_sans, same_names, with_internal
from certlib.nodes import revoked_folder
from certlib.store import Store

SERVER_DAYS = 397  # the longest lifetime browsers and most policies accept


def sign_server(store: Store, public_key, names: list[str], days: int) -> tuple[x509.Certificate, x509.Certificate]:
    ca_cert, ca_key = store.read_ca()
    return sign_leaf(ca_cert, ca_key, "superlink", public_key, names, SERVER_ONLY, days), ca_cert


def make_server(store: Store, sans: list[str], days: int) -> list[str]:
    store.refuse_existing("server/superlink.crt", "server/superlink.key")
    names = with_internal(sans)
    key = new_key()
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
        return issue_missing_server(store, sans, names, days)
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


def issue_missing_server(store: Store, sans: list[str], names: list[str], days: int) -> str:
    """No server key: a new pair, unless a certificate is there without its key (whose key is it?)."""
    if store.exists("server/superlink.crt"):
        raise CertError(f"{store.shown(store.path('server/superlink.key'))} is missing, so its certificate "
                        "is useless: for a new pair, run certs/make-certs.sh server --force --san ...")
    make_server(store, sans, days)
    say(f"server certificate and key were missing: issued for {', '.join(names)}")
    return "server certificate issued"


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
    """server/superexec.secret: what the SuperLink and the SuperExec authenticate each other with."""
    store.refuse_existing("server/superexec.secret")
    store.write("server/superexec.secret", secrets.token_hex(32).encode(), private=True)
    revoked_folder(store)
