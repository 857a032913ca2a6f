"""The CA: ca/ca.crt and ca/ca.key, and the CA certificate in server/ and user/ (what the
SuperLink's machine and `flwr run` check the server's certificate against)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certlib.certificates import builder, new_key, pem_cert, pem_key
from certlib.store import Store

CA_DAYS = 3650


def make_ca(store: Store, days: int) -> None:
    store.refuse_existing("ca/ca.crt", "ca/ca.key")
    key = new_key()
    # path_length=0: it signs end-entity certificates only, never another CA.
    cert = (builder("flowerdock CA", None, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    # for_container=False: no container reads the CA key; it stays the operator's.
    store.write("ca/ca.key", pem_key(key), private=True, for_container=False)
    for folder in ("ca", "server", "user"):
        store.write(f"{folder}/ca.crt", pem_cert(cert))
