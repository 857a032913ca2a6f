"""The log aggregator (docker/compose.aggregator.yaml, docker/aggregator/rsyslog.conf) and the
report on its store, against a ClientApp that forges the ServerApp's lines (tests/forging_app).

One federation (2 SuperNodes, 2 rounds) under a long project name, so that every tag (service,
container ID, name) is past RFC 5424's 48 characters: every line is stored with the container
and service the engine named, whatever the line claims; run events reach runs/ from the
ServerApp alone, each once; the forged ones are in untrusted.jsonl, noted in runs/ and in the
aggregator's own log; the report's table is the ServerApp's own; no container of the federation
can reach the aggregator's port. And, without Docker: the aggregator and the report trust the
same events, which are every event the ServerApp logs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import forging_app
from tests.conftest import ROOT, Project, exchanges, free_port, sh

NODES, ROUNDS = 2, 2
PROJECT = "flowerdock-test-aggregator-provenance"  # + 8 hex digits: container names of 60+ characters
STORE = "/var/log/flowerdock"
RSYSLOG_CONF = ROOT / "docker" / "aggregator" / "rsyslog.conf"

_spec = importlib.util.spec_from_file_location("log_provenance", ROOT / "scripts" / "log_provenance.py")
provenance = sys.modules["log_provenance"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(provenance)
SERVERAPP_EVENTS, UNTRUSTED, PROVENANCE = provenance.SERVERAPP_EVENTS, provenance.UNTRUSTED, provenance.PROVENANCE


# --- without Docker: one list of run events, in step with the code that logs them --------

def trusted_in_rsyslog(service: str) -> set[str]:
    """The events rsyslog.conf trusts from `service` alone."""
    rules = re.findall(r'if \$!event == \[([^\]]*)\] then \{\s*set \$\.trusted = "([\w-]+)"', RSYSLOG_CONF.read_text())
    return {name for names, trusted in rules if trusted == service for name in re.findall(r'"(\w+)"', names)}


def logged_events(*paths: str) -> set[str]:
    """The events these modules log: log.info("name", ...), (log.info if ok else log.error)("name", ...)."""
    pattern = r'(?:\blog\.(?:debug|info|warning|error|critical)|\))\(\s*"([a-z_]+)"'
    return {name for path in paths for name in re.findall(pattern, (ROOT / path).read_text())}


def test_the_aggregator_and_the_report_trust_the_same_serverapp_events():
    # Every module of app/ but those the ClientApp runs logs for the ServerApp (the defences' too).
    clientapp_side = {"client_app.py", "task.py", "site_data.py", "models.py", "metadata.py"}
    serverapp = logged_events(*(str(p.relative_to(ROOT)) for p in sorted((ROOT / "app").glob("*.py"))
                                if p.name not in clientapp_side))
    assert {"client_round", "round_summary", "global_evaluation", "run_finished"} <= serverapp
    assert trusted_in_rsyslog("serverapp") == SERVERAPP_EVENTS == serverapp
    submit = logged_events("docker/submit.py")
    assert {"run_submitted", "run_log", "run_outcome"} <= submit
    assert trusted_in_rsyslog("submit") == submit
    # None of them is a ClientApp's: a site's own view of its training stays in runs/.
    assert not (SERVERAPP_EVENTS | submit) & logged_events("app/client_app.py")


# --- in Docker: a federation with a lying ClientApp --------------------------------------

def strip(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in PROVENANCE}


def canon(event: dict) -> str:
    return json.dumps(strip(event), sort_keys=True)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@dataclass
class Container:
    name: str
    id: str  # the short ID, as the engine's tag has it
    service: str
    printed: list[dict]  # what it wrote, from the engine's own copy (`docker logs`)


@dataclass
class Observed:
    project: str
    run_id: str
    containers: dict[str, Container]  # by name, the one-off `submit` included
    store: Path  # a copy of the aggregator's /var/log/flowerdock
    aggregator_log: list[dict]
    compose_logs: str  # `docker compose logs`, every service, prefixed
    port_probe: dict[str, str]  # from a SuperNode: target -> what connecting to it did

    def stored(self, relative: str) -> list[dict]:
        path = self.store / relative
        return jsonl(path.read_text()) if path.exists() else []

    def of(self, service: str) -> list[Container]:
        return [c for c in self.containers.values() if c.service == service]


class Aggregated(Project):
    def __init__(self) -> None:
        super().__init__(f"{PROJECT}-{uuid.uuid4().hex[:8]}", ["docker/compose.aggregator.yaml"], {
            "NUM_SUPERNODES": str(NODES), "NUM_ROUNDS": str(ROUNDS), "AGGREGATOR_PORT": str(free_port())})

    def inspect(self, *ids: str) -> list[dict]:
        return json.loads(sh("docker", "inspect", *ids).stdout)

    def printed(self, container_id: str) -> list[dict]:
        out = sh("docker", "logs", container_id)
        return jsonl(out.stdout) + jsonl(out.stderr)

    def probe_syslog_port(self, supernode: str) -> dict[str, str]:
        """From a SuperNode's container, connect to the aggregator by name, by address, and
        to the port the engine sends to, through the host's side of the federation's network."""
        [aggregator] = self.inspect(*self.containers("aggregator"))
        address = next(iter(aggregator["NetworkSettings"]["Networks"].values()))["IPAddress"]
        [network] = json.loads(sh("docker", "network", "inspect", f"{self.name}_flower").stdout)
        gateway = network["IPAM"]["Config"][0]["Gateway"]
        targets = [("aggregator", 5140), (address, 5140), (gateway, int(self.env["AGGREGATOR_PORT"]))]
        probe = ("import json, socket, sys\nresults = {}\nfor host, port in json.loads(sys.argv[1]):\n"
                 "    try:\n        socket.create_connection((host, port), timeout=3).close()\n"
                 "        results[f'{host}:{port}'] = 'connected'\n"
                 "    except OSError as exc:\n        results[f'{host}:{port}'] = type(exc).__name__\n"
                 "print(json.dumps(results))")
        return json.loads(sh("docker", "exec", supernode, "python3", "-c", probe, json.dumps(targets)).stdout)


@pytest.fixture(scope="module")
def observed(images, tmp_path_factory) -> Observed:
    app = forging_app.assemble(tmp_path_factory.mktemp("forging-app"))
    fed = Aggregated()
    try:
        fed.compose("up", "-d", "--no-build", "--wait", "serverapp", "supernode", timeout=600)
        submitted = fed.compose("run", "--rm", "--no-deps", "-T", "-v", f"{app}:/forging:ro", "-e",
                                "APP_DIR=/forging", "submit", check=False, timeout=900)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        port_probe = fed.probe_syslog_port(fed.containers("supernode")[0])
        fed.compose("stop", "superlink", "serverapp", "supernode")  # their logs are complete now
        containers = {}
        for info in fed.inspect(*fed.compose("ps", "-a", "-q").stdout.split()):
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            if service != "aggregator":
                name = info["Name"].lstrip("/")
                containers[name] = Container(name, info["Id"][:12], service, fed.printed(info["Id"]))
        [run_id] = {e["run_id"] for e in jsonl(submitted.stdout) if e["event"] == "run_submitted"}
        store = tmp_path_factory.mktemp("store")
        for _ in range(60):  # the engine forwards asynchronously: give it a moment
            sh("docker", "cp", f"{fed.containers('aggregator')[0]}:{STORE}", str(store))
            counts = {c.name: len(jsonl(p.read_text())) if (p := store / f"flowerdock/containers/{c.name}.jsonl")
                      .exists() else 0 for c in containers.values()}
            if all(counts[c.name] >= len(c.printed) for c in containers.values()):
                break
            time.sleep(0.5)
        # The one-off submit container is gone (`run --rm`): what it wrote is what `run` printed.
        [submit_file] = (store / "flowerdock/containers").glob(f"{fed.name}-submit-run-*.jsonl")
        [submit] = {(e["container"], e["container_id"]) for e in jsonl(submit_file.read_text())}
        containers[submit[0]] = Container(*submit, "submit", jsonl(submitted.stdout) + jsonl(submitted.stderr))
        [aggregator] = fed.containers("aggregator")
        yield Observed(fed.name, run_id, containers, store / "flowerdock", fed.printed(aggregator),
                       fed.compose("logs", "--no-color").stdout, port_probe)
    finally:
        fed.down()


def report(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.docker
def test_every_line_is_stored_once_with_the_container_and_service_the_engine_named(observed):
    names = {c.name for c in observed.containers.values()}
    assert {c.service for c in observed.containers.values()} == {
        "certs", "superlink", "register-supernodes", "serverapp", "supernode", "submit"}
    assert {p.stem for p in (observed.store / "containers").iterdir()} == names  # none unaccounted for
    assert min(len(f"{c.service}/{c.id}/{c.name}") for c in observed.containers.values()) > 48
    for c in observed.containers.values():
        stored = observed.stored(f"containers/{c.name}.jsonl")
        assert stored and all((e["container"], e["container_id"], e["service"]) == (c.name, c.id, c.service)
                              for e in stored), c.name
        # None lost, none twice, nothing else altered (stdout and stderr: compared as a whole).
        assert Counter(map(canon, stored)) == Counter(map(canon, c.printed)), c.name
    [serverapp] = observed.of("serverapp")
    stored = observed.stored(f"containers/{serverapp.name}.jsonl")
    assert [strip(e) for e in stored if e["event"] == "client_round"] == [
        e for e in serverapp.printed if e["event"] == "client_round"]  # in order
    # The lying ClientApp claimed to be the ServerApp: the engine's word replaced its own.
    [forger] = [c for c in observed.of("supernode") if any(e.get("service") == "serverapp" for e in c.printed)]
    assert {e["service"] for e in observed.stored(f"containers/{forger.name}.jsonl")} == {"supernode"}
    unparsed = observed.store / "unparsed.log"
    assert not unparsed.exists() or not unparsed.read_text(), unparsed.read_text()[:2000]  # every line was JSON


@pytest.mark.docker
def test_run_events_enter_runs_from_the_serverapp_alone_each_once(observed):
    assert sorted(p.name for p in (observed.store / "runs").iterdir()) == [f"{observed.run_id}.jsonl"]
    by_run = observed.stored(f"runs/{observed.run_id}.jsonl")
    [serverapp] = observed.of("serverapp")
    run_events = [e for e in by_run if e["event"] in SERVERAPP_EVENTS]
    assert {(e["service"], e["container"]) for e in run_events} == {("serverapp", serverapp.name)}
    assert [strip(e) for e in run_events] == [e for e in serverapp.printed if e["event"] in SERVERAPP_EVENTS
                                              and e.get("run_id") == observed.run_id]
    rounds = Counter((e["server_round"], e["phase"], e["node_id"]) for e in run_events if e["event"] == "client_round")
    assert len(rounds) == NODES * len(exchanges(ROUNDS)) and set(rounds.values()) == {1}
    # submit's copy of the run's lines is nested (run_log), so a query finds each event once.
    assert any(e["event"] == "run_log" and isinstance(e["line"], dict) and e["line"].get("event") == "client_round"
               for e in by_run)
    # Every other line of the run is its container's, as stored there: the sites' own view included.
    assert {e["service"] for e in by_run if e["event"] == "local_train_done"} == {"supernode"}
    for e in by_run:
        if e["event"] != UNTRUSTED:
            assert canon(e) in set(map(canon, observed.stored(f"containers/{e['container']}.jsonl"))), e


@pytest.mark.docker
def test_forged_lines_are_kept_out_and_where_an_operator_sees_them(observed):
    forgers = {c.name: [e for e in c.printed if e["event"] in SERVERAPP_EVENTS | {UNTRUSTED}]
               for c in observed.containers.values() if c.service != "serverapp"}
    forgers = {name: lines for name, lines in forgers.items() if lines}
    assert list(forgers) == [f"{observed.project}-supernode-1"]  # partition 0 lies, and no one else
    [(name, forged)] = forgers.items()
    forger = observed.containers[name]
    assert len(forged) == 4 * ROUNDS  # client_round, round_summary, global_evaluation, a note
    untrusted = observed.stored("untrusted.jsonl")
    assert [note["line"] for note in untrusted] == forged  # as printed, its false claims included
    for note, line in zip(untrusted, forged):
        assert note["event"] == UNTRUSTED and note["level"] == "warning" and note["logger"] == "rsyslogd"
        assert (note["container"], note["container_id"], note["service"]) == (forger.name, forger.id, "supernode")
        assert note["untrusted_event"] == line["event"] and note["run_id"] == observed.run_id
        assert note["trusted_service"] == ("the aggregator" if line["event"] == UNTRUSTED else "serverapp")
    by_run = observed.stored(f"runs/{observed.run_id}.jsonl")
    assert [e for e in by_run if e["event"] == UNTRUSTED] == untrusted  # noted in the run
    assert [e for e in observed.aggregator_log if e["event"] == UNTRUSTED] == untrusted  # and in its log


@pytest.mark.docker
def test_the_report_tables_the_serverapps_own_lines(observed, tmp_path):
    [serverapp] = observed.of("serverapp")
    own = "\n".join(json.dumps(e) for e in serverapp.printed)
    expected = report(stdin=own)
    assert expected.returncode == 0 and not expected.stderr, expected.stderr
    assert expected.stdout.startswith(f"run {observed.run_id}: {ROUNDS} rounds, {NODES} clients, "
                                      f"{NODES * len(exchanges(ROUNDS))} ok")
    forger = f"{observed.project}-supernode-1"
    # What `make report` reads (runs/<run_id>.jsonl), with a chart.
    stored = report(str(observed.store / f"runs/{observed.run_id}.jsonl"), "--png", str(tmp_path / "run.png"))
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.split("\nchart: ")[0] == expected.stdout
    assert f"ignored {4 * ROUNDS} run events not from the serverapp service" in stored.stderr
    assert f"{4 * ROUNDS} from {forger} (supernode)" in stored.stderr
    assert (tmp_path / "run.png").stat().st_size > 10_000
    # Every service's `docker compose logs`, prefixed: the same table, the same lines left out.
    prefixed = report(stdin=observed.compose_logs)
    assert prefixed.returncode == 0 and prefixed.stdout == expected.stdout, prefixed.stderr
    assert f"ignored {4 * ROUNDS} run events" in prefixed.stderr and "(supernode)" in prefixed.stderr
    # Trusted, the forged lines would have changed the table (they come first).
    forged = "\n".join(json.dumps(strip(e)) for e in observed.containers[forger].printed)
    assert report(stdin=forged + "\n" + own).stdout != expected.stdout


@pytest.mark.docker
def test_no_container_of_the_federation_reaches_the_syslog_port(observed):
    assert observed.port_probe and "connected" not in observed.port_probe.values(), observed.port_probe
