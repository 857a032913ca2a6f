"""A deployment across machines, on one machine, shared by the tests that need one:
the server side and client sides as separate compose projects that share no Docker
network. Clients reach the SuperLink only through its published port, under the
name its certificate carries; runs are submitted with `flwr run` from the host
through the Control API port."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, VERSION, Project, free_port, sh

PUBLIC_NAME = "superlink.flowerdock.test"  # in the certificate; tests/compose.host-gateway.yaml maps it
ROUNDS = 2
FLWR = str(Path(sys.executable).parent / "flwr")
# The SuperNodes run signed apps only: the checkout's app, signed and served by the registry.
APP = f"@flowerdock/flowerdock=={VERSION}"


def make_certs(*args: str) -> None:
    sh(sys.executable, "certs/make_certs.py", *args)


def submitter_config(control_port: int, ca: Path) -> str:
    """The laptop's connections as docker/submitter.toml.example has them (this federation's port
    and CA filled in, as its user would), named "remote", and one without the CA."""
    text = (ROOT / "docker/submitter.toml.example").read_text()
    for old, new in (('"flowerdock"', '"remote"'), ("[superlink.flowerdock]", "[superlink.remote]"),
                     ("localhost:9093", f"localhost:{control_port}"), ("/path/to/certs/out/user/ca.crt", str(ca))):
        assert old in text, f"docker/submitter.toml.example lacks {old}"
        text = text.replace(old, new)
    return text + f'\n[superlink.remote-without-ca]\naddress = "localhost:{control_port}"\n'


class Deployment:
    """The server project, with the gateway's hardening options on, and client projects that
    each run one SuperNode: on a partition of the bundled digits (supernode-1 and -2;
    supernode-3's key is never registered; supernode-4's is, for a node to revoke), or, given
    `sites`, each on its own data folder (supernode-N on sites[N-1], all registered), each run
    from its bundle (scripts/site_bundle.py) as a site's machine would."""

    def __init__(self, tmp: Path, sites: list[Path] | None = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.certs, self.other_certs = tmp / "certs", tmp / "other-ca"
        nodes = len(sites) if sites else 4
        make_certs("init", "--out", str(self.certs), "--san", f"DNS:{PUBLIC_NAME}", "--nodes", str(nodes))
        if not sites:  # supernode-3's key exists but is never registered with the SuperLink.
            (self.certs / "server/supernodes/supernode-3.pub").unlink()
        make_certs("publisher", "--out", str(self.certs))  # every SuperNode: signed apps only
        make_certs("init", "--out", str(self.other_certs), "--nodes", "1")  # another federation's CA
        self.registry = tmp / "registry"

        self.fleet_port, self.control_port = free_port(), free_port()
        self.projects: list[Project] = []
        self.server = Project(f"fd-server-{tag}", ["docker/compose.server.yaml"], {
            "SERVER_CERTS_DIR": str(self.certs / "server"), "FLEET_PORT": str(self.fleet_port),
            "CONTROL_PORT": str(self.control_port), "RESTART": "no",
            "REGISTRY_DIR": str(self.registry), "COMPOSE_PROFILES": "signed-apps"})
        self.addresses: dict[str, str] = {}  # the partner's and the outsider's (start())
        # The two SuperNodes keep compose's restart policy; the one-off probes do not restart.
        if sites:  # each from its bundle alone (scripts/site_bundle.py), as a site's machine has it
            self.sites = [self.site(f"fd-site{n}-{tag}", f"supernode-{n}", folder, tmp / "bundles")
                          for n, folder in enumerate(sites, 1)]
        self.clients = [self.client(f"fd-client{n}-{tag}", f"supernode-{n}", partition=n - 1, restart=True)
                        for n in (1, 2)] if not sites else []
        self.probe = self.client(f"fd-probe-{tag}", "supernode-1", partition=0)  # for one-off containers

        self.flwr_home = tmp / "flwr-home"
        self.flwr_home.mkdir()
        (self.flwr_home / "config.toml").write_text(submitter_config(self.control_port, self.certs / "user/ca.crt"))

    def client(self, name: str, node: str, partition: int, certs: Path | None = None,
               superlink: str | None = None, restart: bool = False, site: Path | None = None) -> Project:
        files = ["tests/compose.host-gateway.yaml"]  # compose.client.yaml on this host
        files += ["docker/compose.site-data.yaml"] if site else []
        project = Project(name, files, {
            "SUPERLINK": superlink or f"{PUBLIC_NAME}:{self.fleet_port}",
            "NODE_CERTS_DIR": str((certs or self.certs) / node), "SITE_DATA": str(site or ""),
            "PARTITION_ID": str(partition), "NUM_PARTITIONS": "2", "RESTART": "unless-stopped" if restart else "no"})
        self.projects.append(project)
        return project

    def site(self, name: str, node: str, data: Path, bundles: Path) -> Project:
        """A site run from its bundle: its compose file, its .env (SITE_DATA set, as its operator
        would) and its keys, in a folder outside this checkout; only the test's host names added."""
        made = json.loads(sh(sys.executable, "scripts/site_bundle.py", node, "--site-data", "--out", str(bundles),
                             "--certs", str(self.certs), "--superlink", f"{PUBLIC_NAME}:{self.fleet_port}").stdout)
        bundle = Path(made["bundle"])
        env_file = bundle / ".env"
        env_file.write_text(env_file.read_text().replace("SITE_DATA=/absolute/path/to/this/sites/data",
                                                         f"SITE_DATA={data}"))
        project = Project(name, [str(bundle / "compose.yaml"), str(ROOT / "tests/site-host-names.yaml")], {})
        project.bundle = bundle
        self.projects.append(project)
        return project

    def publish(self, app: Path = ROOT, *extra: str) -> dict:
        """Sign an app and put it in the registry the server serves (scripts/publish_app.py)."""
        out = sh(sys.executable, "scripts/publish_app.py", str(app), "--key", str(self.certs / "publisher/publisher.key"),
                 "--registry", str(self.registry), *extra).stdout
        return json.loads(out)

    def start(self) -> None:
        self.publish()
        self.server.compose("up", "-d", "--no-build", "--wait", "gateway", "serverapp", "app-registry", timeout=300)
        self.allow_list()
        self.server.compose("up", "--no-build", "--exit-code-from", "register-supernodes", "register-supernodes")
        for client in self.clients:
            client.compose("up", "-d", "--no-build", "--wait", timeout=300)
        self.wait_for_online_nodes(len(self.clients))

    def flwr(self, *args: str, timeout: int = 120, flwr: str = FLWR) -> subprocess.CompletedProcess:
        return sh(flwr, *args, env={"FLWR_HOME": str(self.flwr_home), "LOG_FORMAT": "console"},
                  timeout=timeout, check=False)

    def flwr_json(self, *args: str) -> dict:
        out = self.flwr(*args, "--format", "json").stdout
        return json.loads(out[out.index("{"):])

    def online_nodes(self) -> set[str]:
        nodes = self.flwr_json("supernode", "list", "remote")["nodes"]
        return {n["node-id"] for n in nodes if n["status"] == "online"}

    def wait_for_online_nodes(self, count: int) -> None:
        for _ in range(60):
            if len(self.online_nodes()) == count:
                return
            time.sleep(1)
        pytest.fail(f"expected {count} online SuperNodes, got {self.online_nodes()}")

    def run_refused_supernode(self, client: Project, *args: str) -> tuple[int, list[dict]]:
        """Start a SuperNode that must be refused; return its exit status and log lines."""
        result = client.compose("run", "--rm", "--no-deps", "supernode", *args, check=False, timeout=180)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        return result.returncode, lines

    def gateway_events(self, event: str) -> list[dict]:
        return [e for e in self.server.logs("gateway") if e["event"] == event]

    def allow_list(self) -> None:
        """Every hardening option on: the gateway lets in only the clients and a partner.

        On one host, whatever comes through the published port arrives from one NAT address
        (the server network's gateway); internet clients would keep their own. So the
        partner (where the flood comes from: a site gone rogue) and an outsider are containers
        with addresses of their own on the server's network, no key and no CA, that reach the
        gateway directly (by its service name). Their CPU is capped: an attacker elsewhere
        spends its own."""
        network = f"{self.server.name}_flower"
        nat = sh("docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network).stdout.strip()
        self.addresses = {"clients": nat}
        for who in ("partner", "outsider"):
            sh("docker", "run", "-d", "--name", f"{self.server.name}-{who}", f"--network={network}", "--cpus=0.5",
               f"--volume={ROOT / 'tests/flood'}:/flood:ro", "--entrypoint", "sleep", f"flowerdock/supernode:{VERSION}-cpu",
               "infinity")
            self.addresses[who] = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                     f"{self.server.name}-{who}").stdout.strip()
        self.server.env["ALLOWED_CLIENTS"] = f"{nat}, {self.addresses['partner']}"
        self.server.compose("up", "-d", "--no-build", "--wait", "gateway", timeout=300)  # with its allow-list

    def from_address(self, who: str, *command: str, timeout: int = 300, background: bool = False):
        """python3 in the partner's or the outsider's container (tests/flood/ is at /flood)."""
        args = ["docker", "exec", "--user", "49999", f"{self.server.name}-{who}", "python3", "-I", *command]
        if background:
            return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return sh(*args, timeout=timeout, check=False)

    def down(self) -> None:
        """Every project down, then one check: a project that left something does not keep the
        others up."""
        for who in ("partner", "outsider"):
            sh("docker", "rm", "-f", f"{self.server.name}-{who}", check=False)
        left = [thing for project in (*self.projects, self.server) for thing in project.down(check=False)]
        assert not left, f"`down` left these in the engine: {left}"


def probe(deployment: Deployment, code: str) -> str:
    """Run Python in a container on a client's own network (not the server's)."""
    out = deployment.probe.compose("run", "--rm", "--no-deps", "--entrypoint", "python3", "supernode",
                                   "-c", code, timeout=120).stdout
    return out.strip().splitlines()[-1]
