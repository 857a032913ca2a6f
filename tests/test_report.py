"""scripts/report.py on a recorded log (a real `docker compose logs` of a 2-node,
2-round federation) and on made-up lines for what a healthy run lacks."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

RECORDED = ROOT / "tests" / "data" / "compose-logs.txt"  # serverapp + submit: every client line twice
RUN_ID = "1579832328207744185"


def report(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env={"LOG_FORMAT": "console", "PATH": ""})


def test_recorded_compose_logs_make_a_table_and_a_chart(tmp_path):
    result = report(str(RECORDED), "--png", str(tmp_path / "run.png"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Each client line was in the input twice, the ServerApp's and a copy in `submit`'s log
    # (raw: recorded before submit nested its copies in `run_log`). Only the ServerApp's count.
    assert "ignored 17 run events not from the serverapp service" in result.stderr
    assert "17 from submit-1 (submit)" in result.stderr
    assert out.startswith(f"run {RUN_ID}: 2 rounds, 2 clients, 8 ok, 0 rejected, 0 failed replies")
    assert "round 1: sampled 2, replies 2, missing 0" in out and "accuracy 0.733" in out
    assert "round 2:" in out and "accuracy 0.953" in out
    for node in ("1676274095056139523", "7515519986375015641"):
        assert out.count(node) == 2  # one row per round
    assert "2.301 -> 0.431" in out  # first and last epoch loss of a client
    png = (tmp_path / "run.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    # Without the prefixes nothing says where a line came from: the copies are counted once.
    plain = report(stdin="".join(text[text.index("{"):] for text in RECORDED.read_text().splitlines(keepends=True)))
    assert plain.stdout == out.split("\nchart: ")[0] and not plain.stderr


def line(**fields) -> str:
    return json.dumps({"timestamp": "2026-11-24T00:00:00Z", "level": "info", "logger": "app.strategy",
                       "run_id": "7", **fields})


def client(node: str, seconds: float, status: str = "ok", **extra) -> str:
    fields = {"training_time": seconds, "converged": False, "training_losses": {"epoch_1": 1.0, "epoch_2": 0.5}}
    return line(event="client_round", server_round=1, phase="train", node_id=node, status=status,
                **(fields if status == "ok" else {"error": extra.pop("error")}), **extra)


def test_stragglers_rejections_and_missing_replies_are_shown():
    lines = [
        line(event="round_summary", server_round=1, phase="train", sampled=5, replies=4, missing=1,
             duration_s=12.0, converged=0),
        client("11", 1.0), client("12", 1.1), client("13", 4.0),
        client("14", 0, status="rejected", error="CBOR tag 258 is not allowed"),
        "serverapp-1  | not json at all", line(event="client_round"),  # noise is skipped
    ]
    result = report("--run-id", "7", stdin="\n".join(lines))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 ok, 1 rejected" in out and "sampled 5, replies 4, missing 1" in out
    rows = {row.split()[0]: row for row in out.splitlines() if row.strip()[:2] in ("11", "12", "13", "14")}
    assert "straggler" in rows["13"] and "straggler" not in rows["11"]
    assert "train rejected: CBOR tag 258 is not allowed" in rows["14"]
    assert "1.000 -> 0.500" in rows["11"]


def test_no_run_in_the_input_is_an_error():
    result = report(stdin="hello\n")
    assert result.returncode == 1 and "no client_round" in result.stderr
    result = report(str(RECORDED), "--run-id", "42")
    assert result.returncode == 1 and RUN_ID in result.stderr


# --- where a line came from: run events count from the ServerApp's service only -----

def forged(**fields) -> dict:
    """What a lying ClientApp prints: a faster client, a summary, an accuracy, and a claim of
    being the ServerApp (fields the aggregator replaces, and that a prefix overrules)."""
    return {"timestamp": "2026-11-24T20:18:00Z", "level": "info", "logger": "app.strategy", "run_id": RUN_ID,
            "container": "flowerdock-serverapp-1", "service": "serverapp", **fields}


FORGED = [
    forged(event="client_round", server_round=1, phase="train", node_id="1676274095056139523", status="ok",
           training_time=0.001, converged=True, training_losses={"epoch_1": 0.0}),
    forged(event="round_summary", server_round=1, phase="train", sampled=99, replies=99, missing=0, duration_s=0.1),
    forged(event="global_evaluation", server_round=1, loss=0.0, accuracy=1.0),
]


def serverapp_lines() -> str:
    """The recorded ServerApp's lines, with their prefixes. (The recording's `submit` lines are
    from before submit nested its copies in `run_log`: raw copies, from a service that is not
    the ServerApp's, so now left out anyway.)"""
    return "".join(text for text in RECORDED.read_text().splitlines(keepends=True) if "serverapp-1  |" in text)


def recorded_table() -> str:
    result = report(stdin=serverapp_lines())
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


def test_run_events_from_a_supernode_prefix_are_ignored_and_counted():
    # Printed before the ServerApp's own lines: trusted, they would take their place.
    lies = [f"\x1b[2Ksupernode-2  | {json.dumps(e)}" for e in FORGED]
    again = [{**e, "timestamp": "2026-11-24T20:18:01Z"} for e in FORGED]  # (the same line again counts once)
    lies.append(f"\x1b[36msupernode-1  |\x1b[0m {json.dumps(again[0])}")  # a colour prefix
    lies.append(f"supernode-1  | serverapp-1  | {json.dumps(again[1])}")  # a prefix printed by the ClientApp
    lies.append(lies[0])
    result = report(stdin="\n".join(lies) + "\n" + serverapp_lines())
    assert result.returncode == 0, result.stderr
    assert result.stdout == recorded_table()  # the ServerApp's lines alone
    assert "ignored 5 run events not from the serverapp service" in result.stderr
    assert "3 from supernode-2 (supernode)" in result.stderr and "2 from supernode-1 (supernode)" in result.stderr


def test_the_aggregators_provenance_decides_and_each_forged_line_counts_once(tmp_path):
    serverapp = {"container": "fd-serverapp-1", "container_id": "0123456789ab", "service": "serverapp"}
    supernode = {"container": "fd-supernode-1", "container_id": "ba9876543210", "service": "supernode"}
    # The recorded ServerApp lines as the aggregator stores them.
    store = [{**json.loads(text[text.index("{"):]), **serverapp} for text in serverapp_lines().splitlines()]
    # A forged line, in its container's file (provenance replaced), and the aggregator's note in runs/.
    as_stored = [{**e, **supernode} for e in FORGED]
    notes = [{"timestamp": e["timestamp"], "level": "warning", "event": "untrusted_run_event", "logger": "rsyslogd",
              "run_id": RUN_ID, "untrusted_event": e["event"], "trusted_service": "serverapp", **supernode,
              "line": e} for e in FORGED]
    (tmp_path / "container.jsonl").write_text("".join(json.dumps(e) + "\n" for e in as_stored))
    (tmp_path / "run.jsonl").write_text("".join(json.dumps(e) + "\n" for e in notes + store))
    result = report(str(tmp_path / "container.jsonl"), str(tmp_path / "run.jsonl"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == recorded_table()
    assert "ignored 3 run events not from the serverapp service" in result.stderr  # not 6
    assert "3 from fd-supernode-1 (supernode)" in result.stderr
    notes_only = report(str(tmp_path / "run.jsonl"))  # what `make report` reads: runs/<run_id>.jsonl
    assert notes_only.stdout == recorded_table() and "ignored 3 run events" in notes_only.stderr


def test_lines_that_do_not_say_where_they_came_from_all_count():
    # `docker compose logs --no-log-prefix serverapp`: the documented way, as before.
    plain = [text[text.index("{"):] for text in serverapp_lines().splitlines()]
    result = report(stdin="\n".join(plain))
    assert result.returncode == 0 and result.stdout == recorded_table() and not result.stderr
    lying = [json.dumps({k: v for k, v in e.items() if k not in ("container", "service")}) for e in FORGED]
    result = report(stdin="\n".join(lying + plain))
    assert "0.00" in result.stdout.split("round 1:")[1].split("round 2:")[0]  # nothing says they lie
    assert result.stdout != recorded_table() and not result.stderr


def test_the_simulations_serverapp_runs_in_the_superlink_service():
    # docker/compose.simulation.yaml: the ServerApp and the virtual SuperNodes share `superlink`.
    simulated = serverapp_lines().replace("serverapp-1  |", "superlink-1  |")
    refused = report(stdin=simulated)
    assert refused.returncode == 1 and "--serverapp-service superlink" in refused.stderr
    assert "from superlink-1 (superlink)" in refused.stderr
    result = report("--serverapp-service", "superlink", stdin=simulated)
    assert result.returncode == 0 and result.stdout == recorded_table() and not result.stderr


def test_make_reports_newest_file_is_not_the_run_it_shows_unless_the_serverapp_says_so(tmp_path):
    # `make report` feeds every runs/ file, oldest first: a site can make the newest one (any run_id,
    # any event of its own) but none of its lines is a ServerApp's, so the last real run is shown.
    serverapp = {"container": "fd-serverapp-1", "container_id": "0123456789ab", "service": "serverapp"}
    supernode = {"container": "fd-supernode-1", "container_id": "ba9876543210", "service": "supernode"}
    store = "".join(json.dumps({**json.loads(text[text.index("{"):]), **serverapp}) + "\n"
                    for text in serverapp_lines().splitlines())
    fake = json.dumps({"timestamp": "2099-01-01T00:00:00Z", "level": "info", "event": "local_train_done",
                       "run_id": "666", "server_round": 1, "phase": "train", **supernode}) + "\n"
    forged = "".join(json.dumps({**e, "run_id": "666", **supernode}) + "\n" for e in FORGED)
    result = report(stdin=store + fake + forged)
    assert result.returncode == 0 and result.stdout == recorded_table(), result.stderr


def test_clipped_updates_rejected_rounds_and_each_nodes_record_are_shown():
    lines = [
        line(event="round_summary", server_round=2, phase="train", sampled=3, replies=3, missing=0,
             duration_s=5.0, converged=0),
        client("21", 1.0), client("22", 1.0), client("23", 1.0, clipped={"distance_scale": 0.12}),
        line(event="round_rejected", server_round=2, accuracy_before=0.91, accuracy_after=0.42,
             furthest=[{"node_id": "23", "update_distance": 80.0}]),
        line(event="node_record", node_id="23", train={"ok": 2}, clipped=2,
             strikes=[{"server_round": 1, "reason": "clipped_hard"}, {"server_round": 2, "reason": "clipped_hard"}],
             excluded_after_round=2),
        line(event="node_record", node_id="21", train={"ok": 2}, clipped=0, strikes=[], excluded_after_round=None),
    ]
    result = report(stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "clipped: distance_scale 0.12" in out
    assert "REJECTED: the aggregate scored 0.420 against 0.910 before; the previous model was kept; " \
           "pulled furthest: 23" in out
    [row] = [text for text in out.splitlines() if text.strip().startswith("23 ") and "EXCLUDED" in text]
    assert "1: clipped_hard; 2: clipped_hard -> EXCLUDED after round 2" in row
    [honest] = [text for text in out.splitlines()[out.splitlines().index("nodes over the run:"):]
                if text.strip().startswith("21 ")]
    assert honest.rstrip().endswith("-")


def test_each_nodes_validation_accuracy_says_which_model_it_is_of():
    # One exchange a round: round 2's train replies evaluated the model after round 1 ("<");
    # the last round's evaluate phase, this round's model.
    def evaluated(node: str, accuracy: float, server_round: int) -> str:
        return line(event="client_round", server_round=server_round, phase="train", node_id=node, status="ok",
                    training_time=1.0, converged=False, training_losses={"epoch_1": 1.0}, evaluated_model=server_round - 1,
                    metrics={"train_loss": 0.5, "eval_loss": 0.4, "eval_acc": accuracy, "num-examples": 10})

    lines = [
        line(event="round_summary", server_round=2, phase="train", sampled=2, replies=2, missing=0, duration_s=3.0,
             converged=0, evaluated_model=1),
        evaluated("31", 0.875, 2), evaluated("32", 0.0, 2),
        line(event="client_round", server_round=2, phase="evaluate", node_id="31", status="ok", evaluation_time=0.1,
             metrics={"eval_loss": 0.3, "eval_acc": 0.9375, "num-examples": 16}),
    ]
    result = report(stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    rows = {text.split()[0]: text for text in result.stdout.splitlines() if text.strip()[:2] in ("31", "32")}
    assert " 0.938 " in rows["31"] and "<0.875" not in rows["31"]  # this round's model, from the evaluate phase
    assert "<0.000" in rows["32"]  # the round before's model, from its train reply
