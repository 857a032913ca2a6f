"""The gateway's limits on the public port, against the shared deployment (tests/deployment.py)
with every hardening option on: an allow-list, bodies read whole at the gateway, per-client rate
and concurrency limits, a cap on concurrent uploads, header and body timeouts.

From a container with no key and no CA (tests/flood/attack.py): each kind of abuse is refused
with its status and logged with its reason and client; an address off the allow-list gets
nothing; and during a federation run, 500 concurrent connections, slow headers and bodies, a
2 GB body and bursts of unauthenticated Fleet requests leave the run's accuracy as it was, its
rounds within 1.5x of a quiet run's, and the SuperLink's memory bounded.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import sh
from tests.deployment import APP, Deployment

pytestmark = pytest.mark.docker

GATEWAY = "gateway"  # its service name, on the server's network where the partner and outsider are
MiB = 2**20


def attack(deployment: Deployment, *args: str, timeout: int = 300) -> dict:
    result = deployment.from_address("partner", "/flood/attack.py", GATEWAY, "9092", *args, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def refusals(deployment: Deployment, since: str, who: str, events: list[dict] | None = None) -> Counter:
    """(status, reason) of every refusal the gateway logged for that client (in `events`, or in
    the gateway's log as the engine still holds it)."""
    events = deployment.gateway_events("gateway_refused") if events is None else events
    return Counter((e["status"], e["reason"]) for e in events
                   if e["event"] == "gateway_refused" and e["timestamp"] >= since
                   and e["client"] == deployment.addresses[who])


class LogTail:
    """Every line a container prints while the block runs, read as it comes.

    A flood's hundred thousand refusals outgrow the json-file rotation (5 x 10 MB, compose.yaml):
    read afterwards, the engine no longer holds the first ones (the 2 GB bodies' 413s). A log
    aggregator keeps them; so does this."""

    def __init__(self, container: str, tmp: Path) -> None:
        self.path = tmp / f"{container}.log"
        self.container = container

    def __enter__(self) -> LogTail:
        self.file = self.path.open("wb")
        self.process = subprocess.Popen(["docker", "logs", "--follow", "--since", "1s", self.container],
                                        stdout=self.file, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1)  # the last lines in flight
        self.process.terminate()
        self.process.wait(timeout=30)
        self.file.close()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def test_each_kind_of_abuse_is_refused_and_logged_with_its_reason(deployment, unaffected):
    since = now()
    seen = attack(deployment, "--connections", "60", "--burst", "400", "--seconds", "15")
    assert seen["big_body"]["declared"]["status"] == 413
    chunked = seen["big_body"]["chunked"]
    assert chunked["status"] == 413 and chunked["bytes_sent"] < 64 * MiB  # not 2 GB: refused at 8 MiB
    assert seen["connections"].get("503", 0) > 0  # more at once than one client may have
    # nginx drops a client too slow without an answer (and logs a 408, below)
    assert seen["connections"].get("closed", 0) > 0  # those let in trickled too slowly
    assert set(seen["slow_header"]) == {"closed"}
    # a stalled upload is dropped too (alone; in the flood this client's quota of requests at once
    # may refuse it first), after the body timeout, not the hour a Fleet request once had
    assert seen["stalled_alone"]["status"] == "closed" and seen["stalled_alone"]["seconds"] < 30
    assert set(seen["slow_body"]) <= {"closed", "503"}
    assert seen["burst"].get("503", 0) > 0  # the rate limit
    # Within the rate, alone, the gateway lets requests through: the SuperLink refuses them itself.
    assert sum(seen["within_rate"].values()) == 20 and all(s.startswith("4") for s in seen["within_rate"])

    logged = refusals(deployment, since, "partner")
    for refusal in [(413, "body too large"), (503, "request rate"), (503, "concurrent requests"),
                    (408, "client too slow")]:
        assert logged[refusal] > 0, (refusal, logged)
    [limits] = [e for e in deployment.server.logs("gateway") if e["event"] == "gateway_limits"][-1:]
    assert limits["fleet_max_body"] == "8m" and limits["allowed_clients"] != "any"


def test_an_address_off_the_allow_list_gets_nothing(deployment, unaffected):
    since = now()
    code = f"""
import http.client, json, ssl
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
c = http.client.HTTPSConnection("{GATEWAY}", 9092, context=context, timeout=10)
c.request("POST", "/v1/fleet/pull-messages", body=b"")
r = c.getresponse()
print(json.dumps([r.status, r.read().decode()]))
"""
    result = deployment.from_address("outsider", "-c", code)
    status, body = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 403 and "ALLOWED_CLIENTS" in body
    assert refusals(deployment, since, "outsider") == {(403, "address not allowed"): 1}


class MemoryPeak:
    """The most memory a container's cgroup held while it was watched (page cache included)."""

    def __init__(self, container: str) -> None:
        full = sh("docker", "inspect", "-f", "{{.Id}}", container).stdout.strip()
        candidates = [Path(f"/sys/fs/cgroup/memory/docker/{full}/memory.usage_in_bytes"),  # v1, cgroupfs
                      Path(f"/sys/fs/cgroup/system.slice/docker-{full}.scope/memory.current")]  # v2, systemd
        found = [p for p in candidates if p.exists()]
        assert found, f"no cgroup memory file for {container} among {candidates}"
        self.path, self.peak, self.stop = found[0], 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, int(self.path.read_text()))

    def __enter__(self) -> MemoryPeak:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


RUN = "num-server-rounds=3 min-nodes=2 expected-nodes=2 fraction-train=1.0 fraction-evaluate=1.0"


def run(deployment: Deployment, extra: str = "") -> tuple[dict, list[float]]:
    """A run on both SuperNodes: its last evaluation and each round's time (train + evaluate)."""
    before = {r["run-id"] for r in deployment.flwr_json("ls", "remote")["runs"]}
    result = deployment.flwr("run", APP, "remote", "--stream", "--run-config", f"{RUN} {extra}", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [listed] = [r for r in deployment.flwr_json("ls", "remote")["runs"] if r["run-id"] not in before]
    assert listed["status"] == "finished:completed"
    events = [e for e in deployment.server.logs("serverapp") if e.get("run_id") == listed["run-id"]]
    assert {e["status"] for e in events if e["event"] == "client_round"} == {"ok"}
    rounds: dict[int, float] = {}
    for e in events:
        if e["event"] == "round_summary":
            rounds[e["server_round"]] = rounds.get(e["server_round"], 0.0) + e["duration_s"]
    [finished] = [e for e in events if e["event"] == "run_finished"]
    return finished, [rounds[r] for r in sorted(rounds)]


def test_a_run_under_flood_keeps_its_accuracy_its_pace_and_the_superlinks_memory(deployment, unaffected,
                                                                                 tmp_path):
    [superlink] = deployment.server.containers("superlink")
    [gateway] = deployment.server.containers("gateway")
    with MemoryPeak(superlink) as quiet_memory:
        quiet, quiet_rounds = run(deployment)

    since = now()
    with LogTail(gateway, tmp_path) as tail:
        flood = deployment.from_address("partner", "/flood/attack.py", GATEWAY, "9092", "--connections", "500",
                                        "--seconds", "75", background=True)
        try:
            time.sleep(20)  # past the attacks alone (a stalled body waits out BODY_TIMEOUT): the flood is on
            # before the run starts, and lasts past its end
            with MemoryPeak(superlink) as flood_memory:
                attacked, attacked_rounds = run(deployment)
            out, err = flood.communicate(timeout=300)
        finally:
            flood.kill()
    assert flood.returncode == 0, err[-2000:]
    seen = json.loads(out.strip().splitlines()[-1])

    ratio = statistics.mean(attacked_rounds) / statistics.mean(quiet_rounds)
    logged = refusals(deployment, since, "partner", tail.events())
    by_status = Counter()
    for (status, _), count in logged.items():
        by_status[status] += count
    restarts = sh("docker", "inspect", "-f", "{{.RestartCount}} {{.State.OOMKilled}}", superlink).stdout.split()
    print(f"\nflood: {sum(logged.values())} refusals logged ({dict(by_status)}); round "
          f"{statistics.mean(quiet_rounds):.1f} s quiet, {statistics.mean(attacked_rounds):.1f} s under flood "
          f"({ratio:.2f}x); accuracy {quiet['accuracy']:.3f} / {attacked['accuracy']:.3f}; SuperLink peak "
          f"{quiet_memory.peak / MiB:.0f} MiB quiet, {flood_memory.peak / MiB:.0f} MiB under flood; "
          f"2 GB chunked body refused after {seen['big_body']['chunked']['bytes_sent'] / MiB:.0f} MiB; "
          f"attack: {json.dumps({k: seen[k] for k in ('connections', 'slow_header', 'slow_body', 'burst')})}")

    assert refusals(deployment, since, "clients", tail.events()) == Counter()  # the SuperNodes were never turned away
    assert abs(attacked["accuracy"] - quiet["accuracy"]) < 0.03  # two quiet runs differ by about 0.01
    assert ratio <= 1.5, (quiet_rounds, attacked_rounds)
    assert restarts == ["0", "false"]  # never killed for memory, never restarted
    assert flood_memory.peak < quiet_memory.peak + 512 * MiB
    for status in (413, 503, 408):
        assert by_status[status] > 0, logged
    assert seen["burst"].get("503", 0) > 0
