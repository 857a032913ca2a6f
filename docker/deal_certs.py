"""compose.yaml's certificates: made once, then dealt out, each service its own files.

The one-shot `certs` service runs this as root. It makes (or keeps) everything in
the `certs` volume with certs/make_certs.py `ensure`: the CA and its key, the
SuperLink's certificate and key, the SuperExec secret, one key per SuperNode.
That volume is mounted by this service alone. Then it copies into one volume per
kind of service the files that service needs, and nothing else:

  superlink-certs  /certs/server/: ca.crt, superlink.crt, superlink.key, superexec.secret
  serverapp-certs  /certs/server/: ca.crt, superexec.secret (not the SuperLink's key: a
                   ServerApp runs whatever code a run ships)
  public-certs     /certs/server/: ca.crt, supernodes/*.pub, revoked/*.pub (register-supernodes,
                   submit)
  supernode-certs  /certs/supernode-N/: ca.crt, supernode.key. The replicas of one service
                   share a volume, so each key belongs to a uid of its own (50000 + N) with
                   mode 0600: replica N's Flower runs as that uid (supernode_processes.py) and
                   reads no other node's key, and no ClientApp (uid 49999) reads any.

Each volume is emptied and filled again on every start: a file that should no
longer be there is not. Lines are JSON (LOG_FORMAT=json), like make_certs.py's.

  deal_certs.py --nodes N
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from flowerdock_logging import get_logger

STORE, DEAL = Path("/certs"), Path("/deal")
SERVICE_UID = 49999  # superlink, serverapp, register-supernodes and submit run as `flwr`
NODE_UID_BASE = 50000  # replica N's key: uid 50000 + N


def node_uid(number: int) -> int:
    return NODE_UID_BASE + number


def copy(source: Path, target: Path, owner: int = SERVICE_UID, private: bool = False) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    shutil.copyfile(source, target)
    os.chown(target, owner, owner)
    os.chmod(target, 0o600 if private else 0o644)


def empty(folder: Path) -> Path:
    """The volume's mount point, with nothing left in it (the mount itself stays)."""
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return folder


def deal(nodes: int) -> dict[str, list[str]]:
    server = STORE / "server"
    superlink = empty(DEAL / "superlink")
    for name in ("ca.crt", "superlink.crt"):
        copy(server / name, superlink / name)
    for name in ("superlink.key", "superexec.secret"):
        copy(server / name, superlink / name, private=True)

    serverapp = empty(DEAL / "serverapp")
    copy(server / "ca.crt", serverapp / "ca.crt")
    copy(server / "superexec.secret", serverapp / "superexec.secret", private=True)

    public = empty(DEAL / "public")
    copy(server / "ca.crt", public / "ca.crt")
    for kind in ("supernodes", "revoked"):
        for key in sorted((server / kind).glob("*.pub")):
            copy(key, public / kind / key.name)

    supernodes = empty(DEAL / "supernode")
    for number in range(1, nodes + 1):
        folder = STORE / f"supernode-{number}"
        copy(folder / "ca.crt", supernodes / folder.name / "ca.crt")
        copy(folder / "supernode.key", supernodes / folder.name / "supernode.key", owner=node_uid(number),
             private=True)
    return {volume.name: sorted(str(p.relative_to(volume)) for p in volume.rglob("*") if p.is_file())
            for volume in (superlink, serverapp, public, supernodes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    args = parser.parse_args()
    made = subprocess.run([sys.executable, str(Path(__file__).with_name("make_certs.py")), "ensure",
                           "--out", str(STORE), "--nodes", str(args.nodes)])
    if made.returncode != 0:  # make_certs.py said why
        return made.returncode
    dealt = deal(args.nodes)
    get_logger("app.certs").info("certs_dealt", **{f"{name}_files": files for name, files in dealt.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
