"""In Docker: the images, the compose files, and the containers' refusals of bad settings.
The one-host federation end to end is tests/test_readme.py (`make federation` as typed), the
fault scenarios tests/test_faults.py. Needs a Docker engine (CI has one); fails, not skips, without."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter

import pytest

from tests.conftest import ROOT, VERSION, Project, exchanges, sh

pytestmark = pytest.mark.docker

def test_the_cpu_images_train_with_torch_built_without_cuda(images):
    probe = """
import glob, torch
assert torch.version.cuda is None and not torch.backends.cuda.is_built(), torch.__config__.show()
libraries = glob.glob("/usr/lib/**/libcud*", recursive=True) + glob.glob("/opt/venv/**/nvidia", recursive=True)
assert not libraries, libraries
net = torch.nn.Linear(4, 2)
net(torch.ones(8, 4)).sum().backward()
assert net.weight.grad is not None
print(torch.__version__)
"""
    for image in (f"flowerdock/supernode:{VERSION}-cpu", f"flowerdock/serverapp:{VERSION}-cpu"):
        result = sh("docker", "run", "--rm", "--entrypoint", "python3", image, "-c", probe, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_supernode_without_its_partition_stops_with_a_clear_error(images):
    result = sh("docker", "run", "--rm", "-e", "NUM_PARTITIONS=3", "-e", "PARTITION_ID=7",
                f"flowerdock/supernode:{VERSION}-cpu", check=False, timeout=120)
    assert result.returncode == 2
    [event] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert event["event"] == "supernode_config_invalid" and "outside 0..2" in event["error"]


def test_make_certs_runs_in_the_superlink_image_where_no_python_has_cryptography(images, tmp_path):
    result = sh("certs/make-certs.sh", "init", "--nodes", "1", "--san", "DNS:flower.example.org",
                env={"CERTS_USE_DOCKER": "1", "CERTS_OUT": str(tmp_path)}, timeout=120)
    assert f"{tmp_path}/supernode-1/" in result.stdout  # the host's path, not the container's
    assert (tmp_path / "server/superlink.crt").is_file() and (tmp_path / "supernode-1/supernode.key").is_file()


def test_a_client_supernode_without_its_settings_stops_with_a_clear_error(images, tmp_path):
    client = Project(f"flowerdock-client-{uuid.uuid4().hex[:8]}", ["docker/compose.client.yaml"], {
        "NODE_CERTS_DIR": str(tmp_path), "PARTITION_ID": "0", "NUM_PARTITIONS": "2", "SUPERLINK": ""})
    try:
        result = client.compose("run", "--rm", "supernode", check=False, timeout=120)
    finally:
        client.down()
    assert result.returncode == 2
    [event] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert event["event"] == "supernode_config_invalid" and "SUPERLINK is unset" in event["error"]


def test_a_gateway_without_certificates_stops_with_a_clear_error(images):
    result = sh("docker", "run", "--rm", f"flowerdock/gateway:{VERSION}", check=False, timeout=120)
    assert result.returncode == 2
    [event] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert event["event"] == "gateway_config_invalid" and "/certs/server/superlink.key" in event["error"]


def test_a_simulation_runs_in_a_container(images):
    # Flower's simulation runtime inside the SuperLink's container: 50 virtual
    # SuperNodes, 10 sampled per round, 2 rounds.
    sim = Project(f"flowerdock-sim-{uuid.uuid4().hex[:8]}", ["docker/compose.simulation.yaml"],
                  {"SIM_NODES": "50", "SIM_SAMPLED": "10", "SIM_ROUNDS": "2"})
    try:
        result = sim.compose("up", "--no-build", "--exit-code-from", "submit", "submit", check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        events = sim.logs("superlink")  # every line JSON; the ServerApp runs in this container
        rounds = [e for e in events if e["event"] == "client_round"]
        per_client = Counter((e["server_round"], e["phase"], e["node_id"]) for e in rounds)
        assert set(per_client.values()) == {1}
        # honest virtual nodes of about 36 samples each: the defaults' rules must let every one in
        assert [e for e in rounds if e["status"] != "ok"] == []
        per_round = Counter((r, phase) for r, phase, _ in per_client)
        assert per_round == {exchange: 10 for exchange in exchanges(2)}
        summaries = [e for e in events if e["event"] == "round_summary"]
        assert len(summaries) == len(exchanges(2)) and {e["sampled"] for e in summaries} == {10}
        [outcome] = [e for e in sim.logs("submit") if e["event"] == "run_outcome"]
        assert outcome["status"] == "finished:completed"
    finally:
        sim.down()


@pytest.mark.parametrize("files, torch", [(["docker/compose.gpu.yaml"], ""),
                                          (["docker/compose.site-data.yaml", "docker/compose.gpu.yaml"], ""),
                                          (["docker/compose.gpu.yaml", "docker/compose.site-data.yaml"], "cuda")])
def test_a_gpu_site_gets_the_cuda_image_and_a_gpu_reservation(files, torch):
    # The GPU file given last decides the image whatever TORCH says; given first, the site's env
    # file's TORCH=cuda (docker/client.env.example) does.
    rendered = sh("docker", "compose", *(a for f in files for a in ("-f", f)), "config", "--format", "json",
                  env={"TORCH": torch, "SUPERLINK": "flower.example.org:9092", "SITE_DATA": "/srv/data"})
    supernode = json.loads(rendered.stdout)["services"]["supernode"]
    assert supernode["image"].endswith("-cuda") and supernode["build"]["args"]["TORCH"] == "cuda"
    [device] = supernode["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert supernode["environment"]["SUPERLINK"] == "flower.example.org:9092"  # the client's knobs


def test_up_d_starts_the_daemons_only_and_the_project_is_named_after_the_checkout():
    plain = sh("docker", "compose", "config", "--format", "json", env={"COMPOSE_PROJECT_NAME": ""})
    rendered = json.loads(plain.stdout)
    assert "submit" not in rendered["services"]  # `docker compose up -d` submits no run
    assert {"superlink", "serverapp", "supernode"} <= set(rendered["services"])
    # Not one fixed name for every clone: the folder's, as Compose normalises it.
    assert rendered["name"] == re.sub(r"[^a-z0-9_-]", "", ROOT.name.lower()).lstrip("_-")
    named = json.loads(sh("docker", "compose", "config", "--format", "json", "submit").stdout)
    assert "submit" in named["services"]  # naming it (make federation) starts it


COMPOSE_FILES = {  # file -> the knobs it needs to render
    "compose.yaml": {}, "docker/compose.server.yaml": {}, "docker/compose.aggregator.yaml": {},
    "docker/compose.simulation.yaml": {}, "docker/compose.client.yaml": {"SUPERLINK": "x:9092"},
    "docker/compose.gpu.yaml": {"SUPERLINK": "x:9092"},
}


@pytest.mark.parametrize("file", list(COMPOSE_FILES))
def test_every_container_runs_with_the_least_it_needs(file):
    rendered = json.loads(sh("docker", "compose", "-f", file, "--profile", "run", "config", "--format", "json",
                             env=COMPOSE_FILES[file]).stdout)
    for name, service in rendered["services"].items():
        where = f"{file}: {name}"
        assert service.get("read_only") is True, where
        assert service.get("cap_drop") == ["ALL"], where
        assert "no-new-privileges:true" in service.get("security_opt", []), where
        assert 0 < service.get("pids_limit", 0) and 0 < int(service.get("mem_limit", 0)), where
        if service.get("user") != "root":
            assert not service.get("cap_add"), where  # only what starts as root gets any back
        elif name == "supernode":  # root to start Flower and the ClientApps as two users, and no more
            assert set(service["cap_add"]) == {"SETUID", "SETGID", "KILL"}, where
        else:  # the one-shots: their files
            assert set(service.get("cap_add", [])) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "DAC_READ_SEARCH"}, where


# What each machine's env file must name: every knob its compose files read (an operator copies
# the example and reads it; a knob it lacks is one they never learn of). Build-time knobs are
# the image builder's (`make images`), not a site's.
ENV_EXAMPLES = {
    "docker/server.env.example": ["docker/compose.server.yaml"],
    "docker/client.env.example": ["docker/compose.client.yaml", "docker/compose.site-data.yaml",
                                  "docker/compose.gpu.yaml"],
}
BUILD_ONLY = {"BASE_IMAGE"}


def knobs(file: str) -> set[str]:
    """The variables a compose file reads: Compose's own list (it follows `extends`) and every
    ${NAME} in the file's text (Compose leaves out services in profiles)."""
    listed = sh("docker", "compose", "-f", file, "--profile", "*", "config", "--variables", check=False,
                env={"SUPERLINK": "x:9092"}).stdout.splitlines()[1:]
    text = (ROOT / file).read_text()
    return {line.split()[0] for line in listed if line.strip()} | set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


@pytest.mark.parametrize("example", list(ENV_EXAMPLES))
def test_each_env_example_names_every_knob_of_its_compose_files(example):
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / example).read_text(), re.M))
    wanted = set().union(*(knobs(file) for file in ENV_EXAMPLES[example])) - BUILD_ONLY - {"COMPOSE_PROJECT_NAME"}
    assert wanted - named == set(), f"{example} lacks these knobs of {ENV_EXAMPLES[example]}"
    assert named - wanted == set(), f"{example} names knobs its compose files do not read"
