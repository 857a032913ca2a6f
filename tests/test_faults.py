"""Faults, the way they happen, against the real compose federation.

One federation of 3 SuperNodes kept up for several runs, so that the slow part
(starting SuperNodes) is paid once (the liars, 5 SuperNodes: tests/test_liars.py):

  lost nodes   3 SuperNodes, one run of 6 rounds: one SuperNode's container is
               killed after round 1 (a crashed host) and started again after
               round 2; another's Flower process is killed mid-round 3 (the restart
               policy brings it back); a third is frozen (`docker pause`) for
               round 4. The run completes, each lost reply is logged with the ID of
               the node that was asked, and every node is back in later rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, Project, sh

pytestmark = pytest.mark.docker


class Federation(Project):
    """compose.yaml with its daemons kept up; runs are submitted one by one."""

    def __init__(self, nodes: int, min_nodes: int) -> None:
        super().__init__(f"flowerdock-faults-{uuid.uuid4().hex[:8]}", ["compose.yaml"],
                         {"NUM_SUPERNODES": str(nodes), "MIN_NODES": str(min_nodes)})
        self.nodes = nodes

    def start(self) -> None:
        self.compose("up", "-d", "--no-build", "--wait", "serverapp", "supernode", timeout=600)

    def runs(self, *args: str) -> list[dict]:
        """`flwr ls deployment ARGS` from the submit image, as an operator would ask. The CLI
        writes next to its connections file: copied into its (tmpfs) home first, as submit.py does."""
        prepare = 'mkdir -p "$FLWR_HOME" && cp "$FLWR_CONFIG" "$FLWR_HOME/config.toml" && exec flwr "$@"'
        listed = self.compose("run", "--rm", "--no-deps", "-T", "-e", "LOG_FORMAT=console", "--entrypoint", "sh",
                              "submit", "-c", prepare, "flwr", "ls", "deployment", *args, "--format", "json").stdout
        return json.loads(listed[listed.index("{"):])["runs"]

    def submit(self, run_config: str, app_dir: Path | None = None, background: bool = False, deadline: int = 3600):
        args = ["run", "--rm", "--no-deps", "-T", "-e", f"RUN_CONFIG={run_config}", "-e", f"RUN_DEADLINE={deadline}"]
        if app_dir is not None:
            args += ["-v", f"{app_dir}:/rogue:ro", "-e", "APP_DIR=/rogue"]
        command = ["docker", "compose", "-p", self.name, *self.files, *args, "submit"]
        if background:
            return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env={**os.environ, **self.env})
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, **self.env})

    def container(self, replica: int) -> str:
        return f"{self.name}-supernode-{replica}"

    def node_id(self, replica: int) -> str:
        out = sh("docker", "logs", self.container(replica))
        ids = {line.split("SuperNode ID:")[1].split('"')[0].strip()
               for line in (out.stdout + out.stderr).splitlines() if "SuperNode ID:" in line}
        assert len(ids) == 1, f"replica {replica} logged node IDs {ids}"
        return ids.pop()

    def events(self, run_id: str | None = None) -> list[dict]:
        events = self.logs("serverapp")
        return [e for e in events if run_id is None or e.get("run_id") == run_id]

    def wait_for(self, predicate, timeout: float = 300, what: str = "event", after: float = 0) -> dict:
        """The first ServerApp event logged after `after` (time.time(), taken before a
        submit: this run's events only) to match. By time, not by position: `docker logs` gives a
        container's stdout lines, then its stderr lines, so a list index is no boundary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if logged_at(event) > after and predicate(event):
                    return event
            time.sleep(1)
        pytest.fail(f"no {what} within {timeout} s; the ServerApp's last lines:\n" + self.timeline()[-3000:])

    def timeline(self) -> str:
        """The ServerApp's rounds, one short line per event: what a failure report needs."""
        keep = ("client_round", "round_summary", "round_skipped", "nodes_waiting", "nodes_ready",
                "nodes_wait_ended", "run_failed", "run_finished")
        return "\n".join(" ".join(str(e.get(k, "")) for k in ("timestamp", "event", "server_round", "phase",
                                                               "node_id", "status", "reason", "duration_s"))
                         for e in self.events() if e["event"] in keep)


def logged_at(event: dict) -> float:
    """When a line was logged, as time.time() counts (every line has an ISO 8601 UTC `timestamp`)."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def summary_of(run_round: int, phase: str):
    return lambda e: e["event"] == "round_summary" and e["server_round"] == run_round and e["phase"] == phase


def client_rounds(events: list[dict]) -> dict[tuple[int, str, str], dict]:
    """(round, phase, node_id) -> that client_round line; each must appear once."""
    lines: dict[tuple[int, str, str], dict] = {}
    for e in events:
        if e["event"] == "client_round":
            key = (e["server_round"], e["phase"], e["node_id"])
            assert key not in lines, f"two client_round lines for {key}"
            lines[key] = e
    return lines


def outcome(result) -> dict:
    [line] = [json.loads(l) for l in result.stdout.splitlines() if '"run_outcome"' in l]
    return line


# --- lost nodes ---------------------------------------------------------------------


def running(nodes: int):
    fed = Federation(nodes=nodes, min_nodes=2)
    try:
        fed.start()
        yield fed
    finally:
        fed.down()


@pytest.fixture(scope="module")
def three_nodes(images):
    yield from running(3)


def kill_process(container: str, program: str) -> None:
    """SIGKILL the process running `program` (its argv[0] or argv[1]), as a crash would;
    not its children that run the same program (the fork server's ClientApps)."""
    sh("docker", "exec", container, "python3", "-c", f"""
import os, signal
matches = {{}}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:  # a process (a ClientApp ending) may be gone between the listing and the read
            with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                argv = f.read().split(b"\\0")
            if any(arg.endswith({program.encode()!r}) for arg in argv[:2]):
                with open(f"/proc/{{pid}}/stat") as f:
                    matches[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except FileNotFoundError:
            continue
for pid, parent in matches.items():
    if parent not in matches:
        os.kill(pid, signal.SIGKILL)  # the eldest: the program itself, not what it forked
""")


def kill_flower_process(container: str) -> None:
    """SIGKILL the SuperNode's Flower process (the container lives on)."""
    kill_process(container, "flower-supernode")


LOST_ROUNDS = 6


def test_lost_nodes_never_stall_a_run_and_come_back(three_nodes):
    # One exchange a round (the default): each round is its train phase, and the faults land in
    # rounds 2 to 4, each while that round's ClientApps train.
    fed = three_nodes
    ids = {replica: fed.node_id(replica) for replica in (1, 2, 3)}
    earlier = time.time()  # lines of runs before this one: never taken for this run's
    run = fed.submit(f"num-server-rounds={LOST_ROUNDS} expected-nodes=3 min-nodes=2 min-replies=2 "
                     "fraction-train=1.0 fraction-evaluate=1.0 straggler-timeout=10", background=True)
    try:
        fed.wait_for(summary_of(1, "train"), what="round 1", after=earlier)
        killed_at = time.monotonic()
        sh("docker", "kill", fed.container(3))                      # a crashed host, as round 2 starts
        after_loss = fed.wait_for(summary_of(2, "train"), what="round 2 without node 3", after=earlier)
        loss_to_round = time.monotonic() - killed_at
        # At once, while round 3's ClientApps train (seconds; a warm start replies no sooner than that)
        kill_flower_process(fed.container(1))                       # a process dies mid-round
        sh("docker", "start", fed.container(3))                     # the host is back
        fed.wait_for(summary_of(3, "train"), what="round 3", after=earlier)
        freeze(fed.container(2))                                    # a frozen host, for round 4
        fed.wait_for(summary_of(4, "train"), what="round 4 without node 2", after=earlier)
        sh("docker", "unpause", fed.container(2))
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
        sh("docker", "unpause", fed.container(2), check=False)
    assert run.returncode == 0, output[-3000:] + fed.timeline()[-3000:]
    run_id = json.loads([l for l in output.splitlines() if '"run_outcome"' in l][0])["run_id"]
    lines = client_rounds(fed.events(run_id))
    print(f"\nnode lost -> its round went on without it: {loss_to_round:.1f} s")

    def status(server_round: int, phase: str, replica: int) -> str | None:
        return lines.get((server_round, phase, ids[replica]), {}).get("status")

    # A lost reply is logged with the ID of the node asked, never the SuperLink's.
    assert {node for _, _, node in lines} == set(ids.values())
    assert status(2, "train", 3) == "missing"               # killed while still listed online (heartbeat)
    assert status(3, "train", 1) in ("missing", "failed")   # its process died mid-round
    assert status(4, "train", 2) == "missing"               # frozen
    # The rounds went on without them, within the straggler wait, not the heartbeat expiry.
    assert after_loss["ok"] == 2 and after_loss["duration_s"] < 60
    # And every one of them is back by the end. A thawed node is listed online again at its next
    # heartbeat: a round that starts sooner goes on without it, so "back" means a reply in round 5
    # or later (the evaluate phase after the last round included).
    later = [(r, "train") for r in range(5, LOST_ROUNDS + 1)] + [(LOST_ROUNDS, "evaluate")]
    back = [{status(r, phase, replica) for r, phase in later} for replica in (1, 2, 3)]
    assert all("ok" in statuses for statuses in back), fed.timeline()
    restarts = int(sh("docker", "inspect", "-f", "{{.RestartCount}}", fed.container(1)).stdout)
    assert restarts >= 1  # the restart policy, not a person, brought the crashed process back
    finished = [e for e in fed.events(run_id) if e["event"] == "run_finished"]
    assert finished and finished[0]["accuracy"] > 0.8



def freeze(container: str, attempts: int = 10) -> None:
    """`docker pause`, again while the kernel cannot freeze the container's cgroup yet ("unable to
    freeze": a task in it is mid-fork or in an uninterruptible wait; seen once in a clean-clone run)."""
    for _ in range(attempts):
        result = sh("docker", "pause", container, check=False)
        if result.returncode == 0:
            return
        assert "unable to freeze" in result.stderr, result.stderr
        time.sleep(0.5)
    pytest.fail(f"docker pause {container}: the kernel could not freeze it in {attempts} attempts: {result.stderr}")


def test_a_crashing_serverapp_fails_the_run_loudly(three_nodes):
    # An unknown strategy makes the ServerApp raise at start.
    result = three_nodes.submit('num-server-rounds=1 strategy="no-such-strategy"')
    assert result.returncode == 1
    line = outcome(result)
    assert line["status"] == "finished:failed" and line["level"] == "error"
    [failed] = [e for e in three_nodes.events(line["run_id"]) if e["event"] == "run_failed"]
    assert "strategy must be one of" in failed["reason"]


def test_a_run_starts_from_another_runs_checkpoint_and_refuses_a_model_that_does_not_fit(three_nodes):
    fed = three_nodes
    first = outcome(fed.submit("num-server-rounds=1 min-nodes=2"))
    assert first["status"] == "finished:completed"
    [ended] = [e for e in fed.events(first["run_id"]) if e["event"] == "run_finished"]
    checkpoint = f"run-{first['run_id']}/checkpoint.pt"

    resumed = outcome(fed.submit(f'num-server-rounds=1 min-nodes=2 initial-model="{checkpoint}"'))
    assert resumed["status"] == "finished:completed"
    events = fed.events(resumed["run_id"])
    [loaded] = [e for e in events if e["event"] == "initial_model_loaded"]
    assert loaded["path"] == f"/var/lib/flower/outputs/{checkpoint}"
    [start] = [e for e in events if e["event"] == "global_evaluation" and e["server_round"] == 0]
    assert start["accuracy"] == ended["accuracy"]  # where the first run ended, not a fresh model

    wrong = fed.submit(f'num-server-rounds=1 min-nodes=2 model="mlp" initial-model="{checkpoint}"')
    assert wrong.returncode == 1
    [failed] = [e for e in fed.events(outcome(wrong)["run_id"]) if e["event"] == "run_failed"]
    assert "does not fit the run's model (model=mlp)" in failed["reason"]


def test_a_run_past_its_deadline_is_stopped(three_nodes):
    fed = three_nodes
    started = time.monotonic()
    result = fed.submit("num-server-rounds=50 fraction-train=1.0 fraction-evaluate=1.0", deadline=20)
    assert result.returncode == 1 and time.monotonic() - started < 120
    [exceeded] = [json.loads(l) for l in result.stdout.splitlines() if '"run_deadline_exceeded"' in l]
    assert exceeded["stopped"] is True and exceeded["deadline_s"] == 20
    [run] = fed.runs("--run-id", exceeded["run_id"])
    assert run["status"] == "finished:stopped"


def container_events(container: str, event: str) -> list[dict]:
    out = sh("docker", "logs", container)
    return [json.loads(l) for l in (out.stdout + out.stderr).splitlines() if f'"event": "{event}"' in l]


def test_a_dead_fork_server_costs_speed_not_replies(three_nodes):
    fed = three_nodes
    container = fed.container(2)
    ready_before = len(container_events(container, "forkserver_ready"))
    earlier = time.time()
    run = fed.submit("num-server-rounds=3 fraction-train=1.0 fraction-evaluate=1.0", background=True)
    try:
        fed.wait_for(lambda e: e["event"] == "run_started", what="the run's start", after=earlier)
        kill_process(container, "clientapp_forkserver.py")  # the warm launcher's server, mid-run
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    run_id = json.loads([l for l in output.splitlines() if '"run_outcome"' in l][0])["run_id"]
    statuses = {line["status"] for line in client_rounds(fed.events(run_id)).values()}
    assert statuses == {"ok"}, fed.timeline()
    # The entrypoint saw it die and started another; the container itself never restarted.
    assert container_events(container, "forkserver_exited")
    assert len(container_events(container, "forkserver_ready")) > ready_before



# --- who can read which secret ------------------------------------------------------

PROBE = (ROOT / "tests/secrets_probe.py").read_text()


def readable_secrets(container: str, uid: int | str) -> list[str]:
    """The secrets a process of that uid can read inside the container (tests/secrets_probe.py)."""
    return json.loads(sh("docker", "exec", "-i", "-u", str(uid), container, "python3", "-I", "-", input=PROBE).stdout)


def process_users(container: str) -> dict[str, int]:
    """program -> uid of each of the container's processes."""
    out = sh("docker", "exec", container, "python3", "-I", "-c", """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        print(os.stat(f"/proc/{pid}").st_uid, *(a.decode().rsplit("/", 1)[-1] for a in argv[:2]))
    except (FileNotFoundError, IndexError):
        pass
""").stdout
    return {" ".join(line.split()[1:]): int(line.split()[0]) for line in out.splitlines()}


def test_each_container_reads_only_its_own_secrets(three_nodes):
    fed = three_nodes
    [superlink], [serverapp] = fed.containers("superlink"), fed.containers("serverapp")
    assert readable_secrets(superlink, 49999) == ["/certs/server/superexec.secret", "/certs/server/superlink.key"]
    assert readable_secrets(serverapp, 49999) == ["/certs/server/superexec.secret"]  # runs what a run ships
    for replica in (1, 2, 3):
        container, daemon = fed.container(replica), 50000 + replica
        users = process_users(container)
        assert users["python3 flower-supernode"] == daemon  # Flower holds the key ...
        assert users["python3 flower-superexec"] == 49999  # ... and starts the ClientApps as flwr
        assert users["python3 clientapp_forkserver.py"] == 49999
        assert readable_secrets(container, daemon) == [f"/certs/supernode-{replica}/supernode.key"]
        assert readable_secrets(container, 49999) == []  # a ClientApp reads no key, its own node's neither
        assert readable_secrets(container, 0) == []  # the entrypoint: root without the right to read
    for service in ("submit", "register-supernodes"):  # the one-shots, as they run
        out = fed.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python3", service, "-I", "-",
                          input=PROBE).stdout
        assert json.loads(out.strip().splitlines()[-1]) == [], service
    # The CA key: only in the volume that the certs one-shot alone mounts.
    out = fed.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python3", "certs", "-I", "-",
                      input=PROBE).stdout
    assert "/certs/ca/ca.key" in json.loads(out.strip().splitlines()[-1])
    for container in (superlink, serverapp, *(fed.container(r) for r in (1, 2, 3))):
        mounts = json.loads(sh("docker", "inspect", "-f", "{{json .Mounts}}", container).stdout)
        assert not any(m.get("Name", "").endswith("_certs") for m in mounts), container  # not the CA's volume
