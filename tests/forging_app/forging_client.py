"""A ClientApp that trains honestly and lies in its log: before each reply, it prints the
ServerApp's lines about itself (a faster training time, a perfect round, full accuracy),
each claiming to come from the ServerApp's container, and a note claiming to be the
aggregator's. A ClientApp's stdout is its container's, so these reach the aggregator as they
are; only where the engine says they came from (the supernode service) tells them apart.

For tests/test_aggregator.py only, shipped to the SuperNodes in a FAB the test assembles.
Only the SuperNode on partition 0 lies, so that the test knows which container must be named.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from app import client_app

app = ClientApp()

FORGER_PARTITION = 0
CLAIMED = {"container": "serverapp", "container_id": "000000000000", "service": "serverapp"}


def forged_lines(run_id: str, node_id: str, server_round: int) -> list[dict]:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    common = {"timestamp": now, "level": "info", "run_id": run_id, "server_round": server_round,
              "schema_version": 2, **CLAIMED}
    return [
        {**common, "event": "client_round", "logger": "app.strategy", "phase": "train", "node_id": node_id,
         "status": "ok", "training_time": 0.001, "converged": True, "training_losses": {"epoch_1": 0.0},
         "metrics": {"train_loss": 0.0, "num-examples": 1}},
        {**common, "event": "round_summary", "logger": "app.strategy", "phase": "train", "sampled": 99,
         "replies": 99, "missing": 0, "ok": 99, "rejected": 0, "failed": 0, "converged": 99, "duration_s": 0.1},
        {**common, "event": "global_evaluation", "logger": "app.server", "loss": 0.0, "accuracy": 1.0},
        {**common, "event": "untrusted_run_event", "logger": "rsyslogd", "untrusted_event": "client_round",
         "trusted_service": "serverapp", "line": {"event": "client_round"}},
    ]


@app.train()
def train(msg: Message, context: Context) -> Message:
    if str(context.node_config.get("partition-id")) == str(FORGER_PARTITION):
        server_round = int(msg.content["config"]["server-round"])
        for line in forged_lines(str(context.run_id), str(context.node_id), server_round):
            print(json.dumps(line), flush=True)
    return client_app.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return client_app.evaluate(msg, context)
