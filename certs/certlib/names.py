"""Names: those a certificate is valid for (--san, as DNS:<name> or IP:<address>) and
those of the folders made for a machine (a SuperNode's, a Ray node's)."""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from certlib.messages import CertError

# Names the SuperLink is reached by on its own machine: the Compose service name
# (SuperExec, SuperNodes of the local compose.yaml) and loopback (health probe,
# an SSH tunnel to the Control API). Always in the certificate.
INTERNAL_SANS = ("DNS:superlink", "DNS:localhost", "IP:127.0.0.1")
NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
RESERVED_FOLDERS = ("ca", "server", "user")  # the folders of the CA, the SuperLink and `flwr run`


def check_folder_name(name: str, kind: str, example: str) -> None:
    """A machine's folder: a plain name (it becomes a path and a key comment), not another's folder."""
    if not NODE_NAME.fullmatch(name) or name in RESERVED_FOLDERS:
        raise CertError(f"bad {kind} name {name!r}: lowercase letters, digits, '.', '_', '-' "
                        f"(not ca/server/user), e.g. {example}")


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
