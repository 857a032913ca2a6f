"""Keys and certificates: what every certificate made here has in common, and PEM."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certlib.names import parse_san


def new_key() -> ec.EllipticCurvePrivateKey:
    """P-384 for every key made here: the CA, TLS and SuperNode keys (Flower wants a NIST curve)."""
    return ec.generate_private_key(ec.SECP384R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def builder(subject: str, issuer: x509.Name | None, public_key, days: int) -> x509.CertificateBuilder:
    """Subject, issuer (None: self-signed), key, serial and lifetime: the fields every certificate has."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flowerdock"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    # Valid from 5 minutes ago: a machine whose clock is a little behind still accepts it.
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def sign_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: str, public_key,
              names: list[str], usages: list[x509.ObjectIdentifier], days: int) -> x509.Certificate:
    """A certificate the CA signs for the names (--san form) and extended key usages given; never a CA."""
    return (builder(subject, ca_cert.subject, public_key, days)
            .add_extension(x509.SubjectAlternativeName([parse_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))


SERVER_ONLY = [ExtendedKeyUsageOID.SERVER_AUTH]
SERVER_AND_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
