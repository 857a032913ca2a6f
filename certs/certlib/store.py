"""The output folder: files written with their final mode and owner, never overwritten unless
--force, and certificates and keys read back. Every failure to use a file is a CertError."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certlib.denied import cannot
from certlib.messages import CertError
from certlib.owners import Owner


class Store:
    """The output folder: writes files, never overwriting unless forced."""

    def __init__(self, root: Path, force: bool, owner: Owner | None, node_owner: Owner | None = None) -> None:
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
        return cannot(exc, verb, Path(target or exc.filename or self.root), self.root, self.shown)

    # --- files ---------------------------------------------------------------------------

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

    def folder(self, relative: str) -> Path:
        """A folder every container user can enter (the files in it keep their own modes)."""
        folder = self.path(relative)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o755)
        except OSError as exc:
            raise self.failed(exc, "write", folder) from exc
        return folder

    def write(self, relative: str, data: bytes, private: bool = False, for_container: bool = True,
              owner: Owner | None = None) -> None:
        """private: mode 0600 and, for_container, given to owner (default: --owner's)."""
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
            self.give(target, owner)

    def give(self, target: Path, owner: Owner) -> None:
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

    def remove(self, relative: str) -> None:
        try:
            self.path(relative).unlink()
        except OSError as exc:
            raise self.failed(exc, "write", self.path(relative)) from exc

    # --- certificates and keys -----------------------------------------------------------

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
