"""SuperNodes: a key pair per node (the node keeps the private key, the SuperLink's folder
the public one, which register-supernodes registers) and revocation."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from certlib.certificates import new_key, pem_cert
from certlib.messages import CertError
from certlib.names import check_folder_name
from certlib.publisher import TRUSTED_ENTITIES
from certlib.store import Store


def make_node(store: Store, name: str) -> None:
    check_folder_name(name, "node", "supernode-3")
    store.refuse_existing(f"{name}/supernode.key", f"server/supernodes/{name}.pub")
    ca_cert, _ = store.read_ca(with_key=False)
    # Flower 1.42 reads SuperNode keys in OpenSSH format, on a NIST curve.
    key = new_key()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH) + f" {name}\n".encode()
    # The SuperNode daemon's uid, not the ClientApps' (owners.SUPERNODE_UID).
    store.write(f"{name}/supernode.key", private, private=True, owner=store.node_owner)
    store.write(f"{name}/supernode.pub", public)
    store.write(f"{name}/ca.crt", pem_cert(ca_cert))
    store.write(f"server/supernodes/{name}.pub", public)
    revoked_folder(store)
    if store.exists(TRUSTED_ENTITIES):  # a federation that runs signed apps only: this node too
        store.write(f"{name}/trusted-entities.yaml", store.read(TRUSTED_ENTITIES))


def revoked_folder(store: Store) -> None:
    """server/revoked/, empty until a node is revoked: the server mounts it (register-supernodes)."""
    store.folder("server/revoked")


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
    store.remove(wanted)
