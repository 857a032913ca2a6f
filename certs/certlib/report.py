"""What the operator reads about the certificates: `show`, and where each folder goes."""

from __future__ import annotations

import datetime
import os

from certlib.messages import CertError, say
from certlib.names import cert_sans
from certlib.owners import CONTAINER_UID, SUPERNODE_UID
from certlib.store import Store

RENEW_DAYS = 30  # `show` flags a certificate, and exits 1, this many days before it expires


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
        soon |= days_left < RENEW_DAYS
        sans = ", ".join(n.partition(":")[2] for n in cert_sans(cert)) or "-"
        say(f"{path.relative_to(store.root)}: {cert.subject.rfc4514_string()}; names: {sans}; "
            f"expires {cert.not_valid_after_utc:%Y-%m-%d} ({days_left} days)"
            + ("  <-- renew soon" if days_left < RENEW_DAYS else ""))
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
