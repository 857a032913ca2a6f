"""Each site trains on its own data, on its own disk (issue #11), across "machines": the
server project and one client project per site, as in tests/test_deployment.py, each
SuperNode mounting only its site's folder (docker/compose.site-data.yaml), and each run from
its bundle alone (scripts/site_bundle.py: its compose file, .env and keys, outside the checkout).

Sites 1-3 come from scripts/make_site_data.py (Dirichlet, so sizes and label mixes
differ; npz and CSV); site 4 starts with a broken file. The tests run in order, on one
federation: a run on three sites (the CNN), the folders are read-only, then two sites go
bad (one at start, one mid-federation) and the other two finish a run of the MLP, chosen
by run config alone, and both come back healthy once fixed, with no restart. The one-host
`make sites federation-sites` is tests/test_readme.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import numpy as np
import pytest

from tests.conftest import exchanges, sh
from tests.deployment import APP, Deployment

pytestmark = pytest.mark.docker

ROUNDS = 3


def make_sites(out, sites: int = 3) -> dict[str, dict]:
    """scripts/make_site_data.py's folders (Dirichlet: sizes and label mixes differ), by site name."""
    summary = sh(sys.executable, "scripts/make_site_data.py", "--sites", str(sites), "--partitioning", "dirichlet",
                 "--alpha", "0.5", "--format", "npz,csv", "--out", str(out), "--json").stdout
    return {s["site"]: s for s in json.loads(summary)["sites"]}


@pytest.fixture(scope="module")
def federation(images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sites")
    summary = make_sites(tmp / "sites")
    broken = tmp / "sites/site-4"
    broken.mkdir()
    x, y = digits_sample(tmp / "sites/site-1")
    np.savez(broken / "train.npz", x=x[:40], y=np.where(np.arange(40) == 7, 12, y[:40]))  # a label out of range
    d = Deployment(tmp, sites=[tmp / f"sites/site-{n}" for n in (1, 2, 3, 4)])
    d.summary, d.folders = summary, tmp / "sites"
    d.sites[0].env["SHARE_LABEL_COUNTS"] = "1"  # site 1 alone opts in
    try:
        d.start()
        for site in d.sites[:3]:
            site.compose("up", "-d", "--no-build", "--wait", timeout=300)
        d.wait_for_online_nodes(3)
        yield d
    finally:
        d.down()


def digits_sample(folder) -> tuple[np.ndarray, np.ndarray]:
    with np.load(folder / "train.npz") as archive:
        return archive["x"], archive["y"]


def run(d: Deployment, run_config: str) -> tuple[dict, list[dict]]:
    """Submit a run from the host; return it and its ServerApp lines."""
    before = {r["run-id"] for r in d.flwr_json("ls", "remote")["runs"]}
    result = d.flwr("run", APP, "remote", "--stream", "--run-config", run_config, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [new] = [r for r in d.flwr_json("ls", "remote")["runs"] if r["run-id"] not in before]
    return new, [e for e in d.server.logs("serverapp") if e.get("run_id") == new["run-id"]]


def final_accuracy(events: list[dict]) -> float:
    [finished] = [e for e in events if e["event"] == "run_finished"]
    return finished["accuracy"]


def train_examples_by_node(events: list[dict]) -> dict[str, set[int]]:
    by_node: dict[str, set[int]] = {}
    for e in events:
        if e["event"] == "client_round" and e["phase"] == "train" and e["status"] == "ok":
            by_node.setdefault(e["node_id"], set()).add(e["metrics"]["num-examples"])
    return by_node


def health(project) -> tuple[str, str]:
    """The container's health status, and what its last probe printed."""
    [container] = project.containers("supernode")
    state = json.loads(sh("docker", "inspect", "-f", "{{json .State}}", container).stdout)
    last = state["Health"]["Log"][-1]["Output"] if state["Health"]["Log"] else ""
    return state["Health"]["Status"], last


def wait_for_health(project, wanted: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, output = health(project)
        if status == wanted:
            return output
        time.sleep(1)
    pytest.fail(f"{project.name} is {status}, not {wanted}, after {timeout:.0f} s: {output}")


def test_each_site_trains_on_exactly_its_own_folder(federation):
    sizes = sorted(s["train"] for name, s in federation.summary.items())
    labels = [tuple(sorted(s["labels"].items())) for s in federation.summary.values()]
    assert len(set(sizes)) == 3 and len(set(labels)) == 3  # different sizes and label mixes
    new, events = run(federation, f"num-server-rounds={ROUNDS} min-nodes=3 expected-nodes=3 min-replies=3 "
                                  "fraction-train=1.0 fraction-evaluate=1.0")
    assert new["status"] == "finished:completed"
    by_node = train_examples_by_node(events)
    # Every round, each site reports its folder's training size, and nothing else.
    assert sorted(n for counts in by_node.values() for n in counts) == sizes
    assert all(len(counts) == 1 for counts in by_node.values())
    assert Counter(e["status"] for e in events if e["event"] == "client_round") == {"ok": len(exchanges(ROUNDS)) * 3}
    assert final_accuracy(events) > 0.8, "the run did not converge"
    # Only site 1 opted in to sending its label counts: they are its training file's.
    with np.load(federation.folders / "site-1/train.npz") as archive:
        labels, counts = np.unique(archive["y"], return_counts=True)
    shared = [e["label_counts"] for e in events if e["event"] == "client_round" and "label_counts" in e]
    assert shared == [{str(k): int(v) for k, v in zip(labels, counts)}] * ROUNDS
    # Each SuperNode checked its folder at start and found what the tool wrote.
    checked = sorted(e["train_examples"] for site in federation.sites[:3]
                     for e in site.logs("supernode") if e["event"] == "site_data_valid")
    assert checked == sizes


def test_a_site_folder_is_never_writable_from_its_container(federation):
    for site in federation.sites[:3]:
        [container] = site.containers("supernode")
        # Not even root in the container may write: the mount itself is read-only.
        for command in (["touch", "/data/new-file"], ["sh", "-c", "echo x >> /data/$(ls /data | head -1)"]):
            result = sh("docker", "exec", "-u", "0", container, *command, check=False)
            assert result.returncode != 0 and "Read-only file system" in result.stderr, result
        mounts = json.loads(sh("docker", "inspect", "-f", "{{json .Mounts}}", container).stdout)
        [data] = [m for m in mounts if m["Destination"] == "/data"]
        assert data["RW"] is False and data["Type"] == "bind"


def test_broken_sites_are_unhealthy_and_failed_while_the_others_finish(federation):
    site2, site4 = federation.sites[1], federation.sites[3]
    # Site 4 starts with a label out of range: it starts (no restart loop) and is unhealthy.
    site4.compose("up", "-d", "--no-build", timeout=300)
    output = wait_for_health(site4, "unhealthy")
    assert "this site's data cannot be used" in output and "labels must be in 0..9" in output
    assert "sample 7 has 12" in output  # the offending value, on this site only
    [invalid] = [e for e in site4.logs("supernode") if e["event"] == "site_data_invalid"]
    assert invalid["path"] == "/data/train.npz" and invalid["level"] == "error"
    # Site 2's training file becomes unreadable while the federation runs.
    [train_file] = federation.folders.joinpath("site-2").glob("train.*")
    train_file.chmod(0o600)  # the host's root owns it; the container runs as uid 49999
    assert "permission denied" in wait_for_health(site2, "unhealthy")
    federation.wait_for_online_nodes(4)

    # The MLP, by run config alone (the other runs train the CNN).
    new, events = run(federation, 'model="mlp" num-server-rounds=2 min-nodes=2 expected-nodes=4 min-replies=2 '
                                  "fraction-train=1.0 fraction-evaluate=1.0")
    assert new["status"] == "finished:completed"
    [started] = [e for e in events if e["event"] == "run_started"]
    assert started["config"]["model"] == "mlp"
    lines = [e for e in events if e["event"] == "client_round"]
    failed = [e for e in lines if e["status"] == "failed"]
    assert {e["reason"] for e in failed} == {"site_data_invalid"}
    assert len(failed) == 2 * len(exchanges(2))  # two sites, every exchange of two rounds
    problems = {e["node_id"]: e["error"] for e in failed}
    assert sorted("labels must be in 0..9" in p for p in problems.values()) == [False, True]
    assert not any("has 12" in p for p in problems.values())  # no value from a site's data
    assert sorted("permission denied" in p for p in problems.values()) == [False, True]
    assert Counter(e["status"] for e in lines) == {"ok": 2 * len(exchanges(2)), "failed": 2 * len(exchanges(2))}
    assert final_accuracy(events) > 0.5

    # Fixed on the host: both are healthy again, with no restart.
    train_file.chmod(0o644)
    x, y = digits_sample(federation.folders / "site-1")
    np.savez(federation.folders / "site-4/train.npz", x=x[:40], y=y[:40])
    for site in (site2, site4):
        wait_for_health(site, "healthy")
        [container] = site.containers("supernode")
        assert sh("docker", "inspect", "-f", "{{.RestartCount}}", container).stdout.strip() == "0"
    lines = site4.logs("supernode")
    assert [e["event"] for e in lines if e["logger"] == "app.entrypoint" and e["event"].startswith("site_data")] == [
        "site_data_invalid", "site_data_valid"]
    # Each failed ClientApp logged the offending value on the site, and only there.
    local = [e for e in lines if e["logger"] == "app.client" and e["event"] == "site_data_invalid"]
    assert len(local) == len(exchanges(2)) and all(e["detail"] == "sample 7 has 12" for e in local)
