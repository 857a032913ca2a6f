"""Certificates and keys for a Flower deployment: a CA, the SuperLink's server
certificate, SuperNode authentication keys and the SuperExec shared secret.

Run it through `certs/make-certs.sh` (it finds a Python with `cryptography`, or
uses the SuperLink image). Commands:

  init [--san DNS:name|IP:addr ...] [--nodes N]   a new CA and everything below
  ensure [--san ...] [--nodes N]                  init if there is no CA yet, then add any
                                                  missing supernode-1..N (compose.yaml's init),
                                                  and re-issue the server certificate (same CA,
                                                  same key) when --san asks for other names
  server [--san ...]                              a new server certificate and key, same CA
                                                  (rotation; no --san: the current names)
  node NAME                                       a new SuperNode key pair
  revoke NAME                                     move server/supernodes/NAME.pub to server/revoked/
                                                  (register-supernodes then unregisters it)
  publisher                                       the key that signs apps (scripts/publish_app.py), and
                                                  trusted-entities.yaml in every SuperNode folder: those
                                                  SuperNodes then run signed apps only (docs/signed-apps.md)
                                                  (register-supernodes then unregisters it)
  ray [NAME] --san IP:addr ... [--subnet CIDR]    a Ray node certificate (default NAME: ray) for
                                                  every address a Ray node of the simulation's
                                                  cluster is dialled at, and the cluster's token
  show                                            every certificate's names and expiry

Output (default certs/out/), one folder per machine, ready to copy:

  ca/          ca.crt, ca.key: the CA. Keep ca.key offline; no container needs it.
  server/      ca.crt, superlink.crt, superlink.key, superexec.secret,
               supernodes/<name>.pub: the SuperLink machine's files
  <name>/      ca.crt, supernode.key, supernode.pub: one SuperNode machine's files
  user/        ca.crt: what `flwr run` on a user's machine needs
  ray/         ca.crt, ray.crt, ray.key, ray.token: Ray nodes (docs/ray.md); ca/ray.token
               keeps the cluster's token for the next `ray NAME`

Private keys and the secret are written with mode 0600. Run as root (sudo, or
in a container), key files are given to uid/gid 49999, the user every image runs
as (`--owner` changes that), and each supernode.key to uid 49998, the user a
SuperNode's Flower runs as, so that the ClientApp code beside it cannot read it
(`--node-owner`). Nothing is ever overwritten unless --force, except
the server certificate by `ensure` when the names asked for change.

A file or folder it cannot read or write (a step run without sudo after one run
with it) ends it with one line naming the path, its owner and the fix; exit 2.

The code is in certlib/ beside this file (certlib/__init__.py says what is where); this
file is the command line alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# certlib/ sits beside this file. Run as a script, Python puts this folder on sys.path; run
# through exec (tests/test_certs.py) or imported (scripts/publish_app.py), it may not be.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# Every module, imported now: the tests load this file as root, then run it as another uid
# that may not read the checkout, so nothing may be imported later (certlib/__init__.py).
from certlib.ca import CA_DAYS, make_ca  # noqa: E402
from certlib.messages import CertError, say  # noqa: E402
from certlib.names import parse_san, split_sans  # noqa: E402
from certlib.nodes import make_node, revoke_node  # noqa: E402
from certlib.owners import key_owners  # noqa: E402
from certlib.publisher import make_publisher  # noqa: E402
from certlib.ray_nodes import make_ray_node, subnet_sans  # noqa: E402
from certlib.report import instructions, show  # noqa: E402
from certlib.server import SERVER_DAYS, ensure_server, make_secret, make_server, rotate_server  # noqa: E402
from certlib.store import Store  # noqa: E402

COMMANDS = ["init", "ensure", "server", "node", "revoke", "publisher", "show", "ray"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("name", nargs="?", help="node name, for `node`, `revoke` and `ray`")
    parser.add_argument("--out", type=Path, default=Path(os.getenv("CERTS_OUT", Path(__file__).parent / "out")))
    parser.add_argument("--san", action="append", default=[],
                        help="a name the SuperLink is reached by: DNS:<name> or IP:<address> "
                             "(repeat, or comma-separate; default $SUPERLINK_SANS)")
    parser.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs made by init (default 2)")
    parser.add_argument("--days", type=int, default=SERVER_DAYS, help="server certificate lifetime")
    parser.add_argument("--owner", help="uid:gid for key files (default 49999:49999 when run as root)")
    parser.add_argument("--node-owner", help="uid:gid for SuperNode keys (default 49998:49998 when run as "
                                              "root: not the ClientApps' uid)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--subnet", action="append", default=[],
                        help="ray: every host address of this network (a compose network's subnet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    store = Store(args.out.resolve(), args.force, *key_owners(args.owner, args.node_owner))
    sans = split_sans(args.san or [os.getenv("SUPERLINK_SANS", "")])
    for san in sans:  # every command: a typo is reported before anything is written
        parse_san(san)
    try:
        return run(args, store, sans)
    except OSError as exc:  # one not met where files are read or written: still one line, no traceback
        raise store.failed(exc, "use") from exc


def run(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    if args.command in ("revoke", "node") and not args.name:
        raise CertError(f"`{args.command}` needs a node name, e.g. `{args.command} supernode-3`")
    return HANDLERS[args.command](args, store, sans)


def run_show(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    return show(store)


def run_publisher(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    key_id = make_publisher(store)
    say(f"Made {store.shown(store.path('publisher'))}/: publisher.key (keep it with the CA key: it decides "
        f"what code every site runs) and trusted-entities.yaml ({key_id}), also in every SuperNode folder: "
        "copy those to their machines; sign apps with scripts/publish_app.py")
    return 0


def run_revoke(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    revoke_node(store, args.name)
    say(f"moved {args.name}.pub to {store.shown(store.path('server/revoked'))}/: copy server/ to the "
        "server and run register-supernodes there; the node is refused at its next request")
    return 0


def run_node(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    make_node(store, args.name)
    say(instructions(store, [args.name], None))
    return 0


def run_ray(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    name = args.name or "ray"
    # The names of Ray nodes only: $SUPERLINK_SANS, the SuperLink's, is no default here.
    asked = [*split_sans(args.san), *subnet_sans(args.subnet)]
    make_ray_node(store, name, asked, args.days)
    shown = ", ".join(asked) if len(asked) <= 4 else f"{asked[0]} .. {asked[-1]} ({len(asked)} names)"
    say(f"Made {store.shown(store.path(name))}/: ray.crt for {shown}, with ca.crt, ray.key, ray.token "
        "-> every Ray node of the cluster (docs/ray.md: RAY_CERTS_DIR)")
    return 0


def run_server(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    names = rotate_server(store, sans, args.days)
    say(instructions(store, [], names))
    return 0


def node_names(args: argparse.Namespace) -> list[str]:
    """supernode-1..N, the SuperNodes that `init` and `ensure` make."""
    if not 0 <= args.nodes <= 1000:
        raise CertError("--nodes must be between 0 and 1000")
    return [f"supernode-{i}" for i in range(1, args.nodes + 1)]


def run_ensure(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    nodes = node_names(args)
    if not store.exists("ca/ca.crt"):
        return run_init(args, store, sans)
    server = ensure_server(store, sans, args.days)  # first: its refusal leaves the folder as it was
    missing = [n for n in nodes if not store.exists(f"{n}/supernode.key")]
    for node in missing:
        make_node(store, node)
    say(f"CA exists under {store.shown(store.root)}; {server}; "
        f"new SuperNode keys: {', '.join(missing) or 'none'}")
    return 0


def run_init(args: argparse.Namespace, store: Store, sans: list[str]) -> int:
    nodes = node_names(args)
    # Check everything first: a refusal must leave the folder as it was.
    store.refuse_existing("ca/ca.crt", "ca/ca.key", "server/superlink.crt", "server/superlink.key",
                          "server/superexec.secret", *(f"{n}/supernode.key" for n in nodes),
                          hint=" To change only the server certificate's names, keeping the CA and "
                               "every key: certs/make-certs.sh ensure --san ...")
    make_ca(store, CA_DAYS)
    names = make_server(store, sans, args.days)
    make_secret(store)
    for node in nodes:
        make_node(store, node)
    say(instructions(store, nodes, names))
    return 0


HANDLERS = {"init": run_init, "ensure": run_ensure, "server": run_server, "node": run_node,
            "revoke": run_revoke, "publisher": run_publisher, "show": run_show, "ray": run_ray}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CertError as exc:
        say(f"error: {exc}", "error", sys.stderr)
        sys.exit(2)
