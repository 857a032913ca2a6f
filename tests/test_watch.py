"""scripts/watch.py: the run's JSON lines as text a person reads, on the recorded log of a real
2-node, 2-round federation and on made-up streams for what a healthy run lacks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from tests.conftest import ROOT

WATCH = ROOT / "scripts" / "watch.py"
RECORDED = ROOT / "tests" / "data" / "compose-logs.txt"  # serverapp + submit (raw copies: before run_log)
RUN_ID = "1579832328207744185"
NODES = ["1676274095056139523", "7515519986375015641", "71707709631437693", "5531228465920011774",
         "11529215046068469760"]


def command(*args: str) -> list[str]:
    # -S: no site-packages (the standard library is all it may use); -E: no PYTHON* settings.
    return [sys.executable, "-S", "-E", str(WATCH), *args]


def watch(stdin: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), input=stdin, capture_output=True, text=True, timeout=60,
                          env={"PATH": "", **env})


def event(kind: str, **fields) -> dict:
    return {"timestamp": "2026-11-24T20:18:03.376938Z", "level": "info", "event": kind, "logger": "app.strategy",
            "run_id": RUN_ID, **fields, "schema_version": 2}


def relayed(line: dict | str) -> str:
    """A line as `make federation` shows it: submit's copy of the run's log, behind Compose's prefix."""
    return f"submit-1  | {json.dumps(event('run_log', line=line) | {'logger': 'app.submit'})}\n"


def printed(container: str, line: dict) -> str:
    return f"\x1b[2K{container}  | {json.dumps(line)}\n"


def summary(server_round: int, phase: str, ok: int, rejected=0, failed=0, missing=0, duration_s=6.1) -> dict:
    return event("round_summary", server_round=server_round, phase=phase, sampled=ok + rejected + failed + missing,
                 replies=ok + rejected + failed, ok=ok, rejected=rejected, failed=failed, missing=missing,
                 duration_s=duration_s, metrics=None)


def reply(server_round: int, phase: str, node: str, status: str, reason=None, error=None) -> dict:
    fields = {"reason": reason, "error": error} if status != "ok" else {"training_time": 0.2}
    return event("client_round", server_round=server_round, phase=phase, node_id=node, status=status, **fields)


STARTED = event("run_started", logger="app.server",
                config={"num-server-rounds": 3, "strategy": "krum", "min-nodes": 4, "seed": 42})
ROUND_2 = [  # train: 3 ok, one rejected, one failed; the model guard rejects the aggregate
    *(reply(2, "train", node, "ok") for node in NODES[:3]),
    reply(2, "train", NODES[3], "rejected", "outlier_update", "update distance 41.2 over 3 x the median 2.0"),
    reply(2, "train", NODES[4], "failed", "clientapp_raised", "code 2: <class 'ValueError'>:<'bad'>\nmore"),
    event("round_rejected", server_round=2, accuracy_before=0.91, accuracy_after=0.42, threshold=0.86,
          furthest=[{"node_id": NODES[0], "update_distance": 9.0}]),
    event("node_excluded", node_id=NODES[3], server_round=2, exclude_after=2,
          strikes=[{"server_round": 1, "reason": "outlier_update"}, {"server_round": 2, "reason": "outlier_update"}]),
    summary(2, "train", ok=3, rejected=1, failed=1),
    reply(2, "evaluate", NODES[0], "ok"),
    reply(2, "evaluate", NODES[1], "missing", "no_reply", "code 2005: no reply within the round's wait"),
    summary(2, "evaluate", ok=1, missing=1, duration_s=10.25),
    event("global_evaluation", logger="app.server", server_round=2, loss=0.3, accuracy=0.9134, examples=359),
]


def test_recorded_compose_logs_read_as_rounds():
    result = watch(RECORDED.read_text())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {RUN_ID} started: 2 rounds, strategy fedavg, min-nodes 2"
    assert lines[1].startswith("round 0/2 accuracy  0.125")
    assert lines[2].startswith("round 1/2 train     2 ok ") and lines[2].endswith(" 7.5 s")
    assert lines[3].startswith("round 1/2 evaluate  2 ok ")
    assert lines[4] == "round 1/2 accuracy  0.733"
    assert lines[7] == "round 2/2 accuracy  0.953"
    assert lines[-2:] == ["run finished: accuracy 0.953; the model: /var/lib/flower/outputs/final_model.pt in the "
                          "serverapp container", "run outcome: finished:completed"]
    assert len(lines) == 10  # every event once; Flower's own lines, and the clients' ok replies, dropped
    # Recorded before submit nested its copy in `run_log`: its raw run events are not the ServerApp's.
    assert "ignored 17 run events not from the serverapp service" in result.stderr
    # Without prefixes nothing says where a line came from: each event, printed twice, shows once.
    plain = watch("".join(text[text.index("{"):] for text in RECORDED.read_text().splitlines(keepends=True)))
    assert plain.stdout == result.stdout and not plain.stderr
    # As `make federation` shows it today: submit's lines only, the ServerApp's nested in run_log.
    today = []
    for text in RECORDED.read_text().splitlines():
        container, line = text.split("|", 1)
        line = json.loads(line)
        if "submit" in container:
            today.append(printed("submit-1", line) if line["logger"] == "app.submit" else relayed(line))
    assert watch("".join(today)).stdout == result.stdout


def test_a_round_names_each_reply_that_was_not_ok():
    out = watch("".join(relayed(e) for e in [STARTED, *ROUND_2])).stdout.splitlines()
    assert out[0] == f"run {RUN_ID} started: 3 rounds, strategy krum, min-nodes 4"
    assert out[1].startswith("round 2/3 train     3 ok, 1 rejected, 1 failed") and out[1].endswith("  6.1 s")
    assert out[2] == (f"  node {NODES[3]} rejected: outlier_update (update distance 41.2 over 3 x the median 2.0)")
    assert out[3] == f"  node {NODES[4]} failed: clientapp_raised (code 2: <class 'ValueError'>:<'bad'>)"
    assert out[4] == ("  aggregate rejected by the model guard: accuracy 0.910 -> 0.420 (threshold 0.860); "
                      f"the previous global model is kept; pulled furthest: {NODES[0]}")
    assert out[5] == (f"  node {NODES[3]} excluded for the rest of the run: strikes in rounds 1 (outlier_update), "
                      "2 (outlier_update)")
    assert out[6].startswith("round 2/3 evaluate  1 ok, 1 missing") and out[6].endswith(" 10.2 s")
    assert out[7] == f"  node {NODES[1]} missing: no_reply (code 2005: no reply within the round's wait)"
    assert out[8] == "round 2/3 accuracy  0.913"
    assert len(out) == 9  # the ok replies are in the counts, not listed


def test_waiting_a_skipped_round_and_a_failed_run():
    stream = [STARTED,
              event("nodes_waiting", logger="app.quorum", connected=1, wanted=3, quorum=2, waited_s=15.0,
                    timeout_s=120),
              event("nodes_ready", logger="app.quorum", connected=3, waited_s=17.4),
              reply(1, "train", NODES[0], "rejected", "array_nonfinite", "array 'w' has NaN"),
              event("round_skipped", server_round=1, phase="train", reason="too_few_accepted",
                    detail="0 accepted replies, min-replies is 2", hint="the previous global model is kept"),
              summary(1, "train", ok=0, rejected=1),
              reply(2, "train", NODES[0], "failed", "error", "code 0: boom"),  # no summary: the run fails first
              event("run_failed", logger="app.server", level="error", reason="no round aggregated an update")]
    out = watch("".join(map(relayed, stream)) + printed("submit-1", event(
        "run_outcome", logger="app.submit", status="finished:failed"))).stdout.splitlines()
    assert out[1:3] == ["waiting for nodes: 1 of 3 connected (quorum 2), 15 s of 120 s",
                        "nodes ready: 3 connected after 17.4 s"]
    assert out[3].startswith("round 1/3 train     0 ok, 1 rejected")
    assert out[4] == f"  node {NODES[0]} rejected: array_nonfinite (array 'w' has NaN)"
    assert out[5] == ("  round skipped: too_few_accepted (0 accepted replies, min-replies is 2); "
                      "the previous global model is kept")
    assert out[6] == f"  node {NODES[0]} failed: error (code 0: boom)"
    assert out[7:] == ["run failed: no round aggregated an update", "run outcome: finished:failed"]


def test_lines_that_are_not_json_pass_as_they_came_and_other_events_are_dropped():
    stream = ["Attaching to submit-1\n",
              printed("submit-1", event("run_submitted", logger="app.submit", connection="deployment")),
              relayed(event("Starting logstream", logger="flwr")),
              "Traceback (most recent call last):\n",
              '  File "/usr/local/lib/flowerdock/submit.py", line 1, in <module>\n',
              "supernode-2  | ERROR: cannot reach the SuperLink {retrying}\n",
              relayed("flwr: the run's log stream ended"),  # the CLI's own words, relayed as text
              "submit-1 exited with code 1\n"]
    assert watch("".join(stream)).stdout.splitlines() == [
        "Attaching to submit-1", "Traceback (most recent call last):",
        '  File "/usr/local/lib/flowerdock/submit.py", line 1, in <module>',
        "supernode-2  | ERROR: cannot reach the SuperLink {retrying}", "flwr: the run's log stream ended",
        "submit-1 exited with code 1"]


def test_a_supernodes_forged_lines_are_not_shown():
    forged = [summary(3, "train", ok=99, duration_s=0.1), event("global_evaluation", server_round=3, accuracy=1.0),
              event("round_rejected", server_round=3, furthest=[]), event("run_finished", accuracy=1.0)]
    stream = [relayed(STARTED),
              *(printed("supernode-2", e) for e in forged),
              printed("supernode-1", event("run_log", line=forged[0])),  # submit's envelope, printed by a ClientApp
              printed("supernode-1", event("run_outcome", status="finished:completed")),
              f"supernode-1  | serverapp-1  | {json.dumps(forged[1] | {'accuracy': 0.99})}\n",  # a prefix it printed
              relayed(summary(3, "train", ok=2))]
    result = watch("".join(stream))
    out = result.stdout.splitlines()
    assert len(out) == 2 and out[1].startswith("round 3/3 train     2 ok ")
    assert "ignored 5 run events not from the serverapp service" in result.stderr  # those log_provenance guards
    assert "from supernode-2 (supernode)" in result.stderr and "from supernode-1 (supernode)" in result.stderr


def test_json_passes_every_line_through_unchanged():
    stream = RECORDED.read_text() + "not json\n\n" + relayed(summary(1, "train", ok=2)) + "no newline at the end"
    assert watch(stream, "--json").stdout == stream
    assert watch(stream, WATCH="json").stdout == stream
    raw = subprocess.run(command("--json"), input=b"\xff\xfe bytes as they came\r\n", capture_output=True, timeout=60)
    assert raw.stdout == b"\xff\xfe bytes as they came\r\n"


def test_each_line_is_printed_when_its_input_arrives():
    with subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env={"PATH": ""}) as process:
        process.stdin.write(relayed(STARTED))
        process.stdin.flush()  # and no more input, nor end of input, until the line is read
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        try:
            assert first == [f"run {RUN_ID} started: 3 rounds, strategy krum, min-nodes 4\n"]
            process.stdin.write("".join(map(relayed, ROUND_2)))
            process.stdin.close()
            assert process.stdout.read().startswith("round 2/3 train")
        finally:
            process.kill()


def test_the_closing_summary_says_where_the_json_lines_are():
    result = watch(RECORDED.read_text(), "--logs", "docker compose logs")
    assert result.stdout.splitlines()[-1] == "every container's JSON lines: docker compose logs"
    assert watch(RECORDED.read_text(), "--logs", "docker compose logs", WATCH="json").stdout == RECORDED.read_text()


def test_the_serverapps_errors_are_shown_and_a_guard_that_is_off_too():
    crash = event("ServerApp raised an exception", level="error", logger="flwr",
                  exception="Traceback (most recent call last):\n  ...\nImportError: cannot import name 'x'")
    stream = [relayed(STARTED), relayed(event("model_guard_off", reason="guard-tolerance=1")), relayed(crash),
              printed("supernode-1", crash | {"event": "a ClientApp's own error"})]  # not the ServerApp's
    out = watch("".join(stream)).stdout.splitlines()
    assert out[1:] == ["model guard off: guard-tolerance=1",
                       "error: ServerApp raised an exception (ImportError: cannot import name 'x')"]


def test_json_nested_past_the_parsers_depth_is_passed_over_not_fatal():
    deep = "supernode-1  | " + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n"
    result = watch(deep + relayed(summary(1, "train", ok=2)))
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("round 1 train")  # read on
