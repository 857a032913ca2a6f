"""The app publisher's key (docs/signed-apps.md): it signs apps (scripts/publish_app.py), and
SuperNodes given its trusted-entities.yaml run only what it signed."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certlib.store import Store

TRUSTED_ENTITIES = "publisher/trusted-entities.yaml"


def public_key_id(public: bytes) -> str:
    """Flower's trusted-entities name a key by an ID of the publisher's choosing; this one is
    derived from the key itself, so it changes when the key does."""
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
    # for_container=False: the key stays where apps are reviewed, no container reads it.
    store.write("publisher/publisher.key", key.private_bytes(serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()), private=True, for_container=False)
    store.write(TRUSTED_ENTITIES, entities)
    for folder in sorted(p.parent.name for p in store.root.glob("*/supernode.key")):
        store.write(f"{folder}/trusted-entities.yaml", entities)
    return key_id
