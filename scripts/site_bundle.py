"""A site's bundle: what one SuperNode's machine needs, and nothing else, no clone of this repository.

    python3 scripts/site_bundle.py supernode-3 --superlink flower.example.org:9092 [--site-data] [--gpu]
        [--partition 2 --num-partitions 3] [--certs certs/out] [--out bundles] [--images]

makes `bundles/supernode-3/`:

    compose.yaml   the SuperNode service alone, rendered from docker/compose.client.yaml (and
                   docker/compose.site-data.yaml, docker/compose.gpu.yaml) with every ${KNOB} kept
    .env           the knobs, from docker/client.env.example, this site's values filled in
    certs/         the node's folder from the operator's CA: ca.crt, supernode.key (owner and mode
                   kept), trusted-entities.yaml where apps must be signed
    images/        with --images: the SuperNode image, `docker save`d (about 1 GB; 6 GB for CUDA)
    README.md      the commands a site runs

A node that has no key yet gets one (certs/make_certs.py node NAME); its public key must then be
registered on the server (docs/deployment.md, "Adding a SuperNode"). Run it as the user that made
the certificates (sudo where they were made with sudo), so the key keeps its owner.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "docker/client.env.example"


def compose_files(site_data: bool, gpu: bool) -> list[str]:
    # compose.gpu.yaml is compose.client.yaml's SuperNode with a GPU (it extends it), given last:
    # it decides the image (CUDA); compose.site-data.yaml is an overlay.
    if gpu:
        files = ["docker/compose.site-data.yaml"] * site_data + ["docker/compose.gpu.yaml"]
    else:
        files = ["docker/compose.client.yaml"] + ["docker/compose.site-data.yaml"] * site_data
    return [arg for f in files for arg in ("-f", str(ROOT / f))]


def render_compose(name: str, site_data: bool, gpu: bool) -> str:
    """The site's service as Compose merges it, knobs left as ${...}: one source, compose.yaml."""
    rendered = subprocess.run(["docker", "compose", *compose_files(site_data, gpu), "config", "--no-interpolate",
                               "--no-path-resolution"], cwd=ROOT, capture_output=True, text=True, check=True)
    config = yaml.safe_load(rendered.stdout)
    config["name"] = name  # two sites on one host keep apart, as with `-p`
    config["networks"] = {"flower": {}}  # named by the project, not the template's project
    supernode = config["services"]["supernode"]
    supernode.pop("build")  # a site loads the images; it has no build context
    for volume in supernode["volumes"]:
        if volume["target"] == "/certs":
            volume["source"] = "${NODE_CERTS_DIR:-./certs}"
    header = ("# This site's SuperNode, rendered from flowerdock's docker/compose.client.yaml by\n"
              "# scripts/site_bundle.py. Knobs: .env beside this file (docker compose reads it).\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def render_env(superlink: str, site_data: bool, gpu: bool, partition: int, partitions: int) -> str:
    """docker/client.env.example with this site's values: every knob, commented, in one file."""
    values = {"SUPERLINK": superlink, "NODE_CERTS_DIR": "./certs", "TORCH": "cuda" if gpu else ""}
    if site_data:
        values |= {"PARTITION_ID": "", "NUM_PARTITIONS": "", "SITE_DATA": "/absolute/path/to/this/sites/data"}
    else:
        values |= {"PARTITION_ID": str(partition), "NUM_PARTITIONS": str(partitions)}
    text = TEMPLATE.read_text()
    text = re.sub(r"^# Knobs of docker/compose\.client\.yaml.*?\n(?=[A-Z])",
                  "# This site's knobs (docker compose reads this file: run it in this folder).\n",
                  text, count=1, flags=re.S | re.M)
    text = text.replace("made by certs/make-certs.sh", "from the operator's CA (./certs in this bundle)")
    for knob, value in values.items():
        text, found = re.subn(rf"^{knob}=.*$", f"{knob}={value}", text, flags=re.M)
        assert found == 1, f"{TEMPLATE} lacks {knob}="
    return text


def node_folder(certs: Path, node: str) -> Path:
    folder = certs / node
    if not (folder / "supernode.key").exists():
        subprocess.run([sys.executable, str(ROOT / "certs/make_certs.py"), "node", node, "--out", str(certs)],
                       check=True)
        print(f"{node}: a new key; register it on the server: {certs}/server/supernodes/{node}.pub "
              "(docs/deployment.md, adding a SuperNode)", file=sys.stderr)
    return folder


def copy_certs(folder: Path, target: Path) -> None:
    """The node's files, modes and (as root) owners kept: the SuperNode checks its key's."""
    target.mkdir()
    for source in sorted(folder.iterdir()):
        if source.is_file():
            shutil.copy2(source, target / source.name)
            if os.geteuid() == 0:
                os.chown(target / source.name, source.stat().st_uid, source.stat().st_gid)


def image_of(compose_yaml: Path) -> str:
    """The image the bundle runs, as Compose reads it with the bundle's .env."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH"}  # the bundle's own .env decides
    rendered = subprocess.run(["docker", "compose", "-f", str(compose_yaml), "config", "--format", "json"],
                              capture_output=True, text=True, check=True, env=env)
    return json.loads(rendered.stdout)["services"]["supernode"]["image"]


README = """# {name}: a flowerdock SuperNode

What this machine needs: Docker with Compose, this folder. Nothing else of the repository.

```bash
{load}docker compose up -d                 # in this folder: it reads compose.yaml and .env
docker compose logs -f supernode     # JSON lines; `supernode_config_invalid` says what to fix
docker compose down                  # stops it (the key stays in ./certs)
```

`.env` holds every knob, commented{data}. `./certs/supernode.key` is this node's private key:
keep its owner (uid 49998) and mode (0600); the SuperNode stops at start, saying which `chown` or
`chmod` to run, if either is off. The image is `{image}`.
"""


def write_readme(bundle: Path, image: str, images: bool, site_data: bool) -> None:
    load = "docker load -i images/supernode.tar    # once: the image, where no registry serves it\n" if images else \
        f"# the image {image} must be on this machine (`docker load`, or your registry)\n"
    data = ": set SITE_DATA to this site's data folder (docs/site-data.md)" if site_data else ""
    (bundle / "README.md").write_text(README.format(name=bundle.name, load=load, image=image, data=data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node", help="the node's name in the CA's folder (supernode-N), or a new one")
    parser.add_argument("--superlink", required=True, help="the SuperLink's public host:port (a name its certificate carries)")
    parser.add_argument("--certs", type=Path, default=ROOT / "certs/out", help="the operator's certs/out")
    parser.add_argument("--out", type=Path, default=ROOT / "bundles")
    parser.add_argument("--site-data", action="store_true", help="the site trains on its own folder (SITE_DATA)")
    parser.add_argument("--gpu", action="store_true", help="the CUDA image and a GPU reservation")
    parser.add_argument("--partition", type=int, default=0, help="without --site-data: its part of the bundled digits")
    parser.add_argument("--num-partitions", type=int, default=2)
    parser.add_argument("--images", action="store_true", help="docker save the SuperNode image into the bundle")
    args = parser.parse_args(argv)

    bundle = args.out / args.node
    if bundle.exists():
        parser.error(f"{bundle} exists: remove it first (it may hold a key)")
    folder = node_folder(args.certs, args.node)
    bundle.mkdir(parents=True)
    (bundle / "compose.yaml").write_text(render_compose(f"flowerdock-{args.node}", args.site_data, args.gpu))
    (bundle / ".env").write_text(render_env(args.superlink, args.site_data, args.gpu, args.partition,
                                            args.num_partitions))
    copy_certs(folder, bundle / "certs")
    image = image_of(bundle / "compose.yaml")
    if args.images:
        (bundle / "images").mkdir()
        subprocess.run(["docker", "save", "-o", str(bundle / "images/supernode.tar"), image], check=True)
    write_readme(bundle, image, args.images, args.site_data)
    print(json.dumps({"bundle": str(bundle), "image": image, "files": sorted(
        str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
