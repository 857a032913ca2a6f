"""The fake nodes' key pairs: made as certs/certlib/nodes.py makes a SuperNode's, registered by
docker/register_supernodes.py, read as flower-supernode reads them."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def make_keys(folder: Path, nodes: int) -> list[Path]:
    """fake-NNNN.key (OpenSSH private key, P-384, as certs/certlib/nodes.py makes them) and
    fake-NNNN.pub (what docker/register_supernodes.py registers)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, nodes + 1):
        key, path = ec.generate_private_key(ec.SECP384R1()), folder / f"fake-{n:04d}.key"
        path.touch(0o600)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + f" {path.stem}\n".encode())
    return [folder / f"fake-{n:04d}.key" for n in range(1, nodes + 1)]


def _load_key(path: str) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    key = serialization.load_ssh_private_key(Path(path).read_bytes(), None)  # as flower-supernode does
    return key, key.public_key()
