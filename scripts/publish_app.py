"""Signs a Flower app and puts it in this federation's app registry (docs/signed-apps.md).

A SuperNode started with trusted-entities.yaml in its folder runs only FABs signed by
one of those keys (Flower's `--trusted-entities`). In Flower 1.42 a signed FAB reaches
a SuperNode one way: the SuperLink fetches it, with its signatures, from an app hub
(`flwr run @publisher/app==version`). This writes the registry that docker/app_registry.py
serves as that hub on the server's private network:

  REGISTRY/<publisher>/<app>/<version>.fab    the FAB, as `flwr run .` would build it
  REGISTRY/<publisher>/<app>/<version>.json   its sha256 and the signature over
                                              (signed-at, sha256), Flower's format

  python scripts/publish_app.py --key certs/out/publisher/publisher.key --registry /srv/flower/registry [APP_DIR]

The key is the publisher's (certs/make-certs.sh publisher): keep it where the app is
reviewed, never on the server. A version once published is not replaced unless --force.
Prints one JSON object: the app spec to run, the hash, the key ID.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.cli.config_utils import get_fab_metadata
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "certs"))
from certlib.publisher import public_key_id  # noqa: E402 - one rule for the key's ID, with the code that makes the key


class PublishError(Exception):
    """Something to fix before publishing; the message says what."""


def load_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise PublishError(f"cannot use {path} as the publisher's key ({exc}): make it with "
                           "certs/make-certs.sh publisher") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PublishError(f"{path} is not an Ed25519 key: Flower verifies FABs with Ed25519 only")
    return key


def signature(key: ed25519.Ed25519PrivateKey, fab: bytes, signed_at: int) -> dict:
    """One entry of Flower's verifications: the key's ID, when, and the signature."""
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    signed = key.sign(create_message_to_sign(hashlib.sha256(fab).digest(), signed_at))
    return {"public_key_id": public_key_id(public), "signed_at": signed_at,
            "signature": base64.urlsafe_b64encode(signed).rstrip(b"=").decode()}


def publish(app: Path, key: ed25519.Ed25519PrivateKey, registry: Path, force: bool) -> dict:
    fab = build_fab_from_disk(app)
    fab_id, version = get_fab_metadata(fab)  # "publisher/app", "1.0.0"
    folder = registry / fab_id
    target = folder / f"{version}.fab"
    if target.exists() and not force:
        raise PublishError(f"@{fab_id}=={version} is in the registry already ({target}): raise the version "
                           "in pyproject.toml, or --force to replace it")
    entry = signature(key, fab, int(time.time()))
    folder.mkdir(parents=True, exist_ok=True)
    target.write_bytes(fab)
    digest = hashlib.sha256(fab).hexdigest()
    (folder / f"{version}.json").write_text(json.dumps({"sha256": digest, "verifications": [entry]}, indent=2))
    return {"app": f"@{fab_id}=={version}", "sha256": digest, "public_key_id": entry["public_key_id"],
            "registry": str(folder)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", nargs="?", default=".", type=Path, help="the app's folder (default: .)")
    parser.add_argument("--key", required=True, type=Path, help="the publisher's key (publisher.key)")
    parser.add_argument("--registry", required=True, type=Path, help="the registry folder the server serves")
    parser.add_argument("--force", action="store_true", help="replace a version published before")
    args = parser.parse_args()
    try:
        print(json.dumps(publish(args.app.resolve(), load_key(args.key), args.registry, args.force)))
    except PublishError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
