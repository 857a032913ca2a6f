"""Benchmark: the metadata codec against pickle and JSON, and the strategy's per-reply cost.

Prints figures measured in this one run (ratios are within the run). Usage:
    python scripts/bench_metadata.py
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402
import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from app.logging import configure_logging  # noqa: E402
from app.metadata import TrainProcessMetadata, decode, encode, to_config_record  # noqa: E402
from app.strategy import build_strategy  # noqa: E402
from app.task import Net  # noqa: E402


def per_call(fn, seconds: float = 0.5) -> float:
    """Mean seconds per call, over as many calls as fit in `seconds` (after a warm-up)."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return elapsed / n


def codec_table(meta: TrainProcessMetadata, label: str) -> None:
    as_json = lambda m: json.dumps({"version": 1, "kind": "train", **asdict(m)}).encode()  # noqa: E731
    codecs = {
        "cbor (ours, checked)": (encode, decode),
        "pickle (unsafe)": (pickle.dumps, pickle.loads),
        "json": (as_json, lambda b: TrainProcessMetadata(**{k: v for k, v in json.loads(b).items() if k not in ("version", "kind")})),
    }
    base = None
    print(f"\n{label}: {len(meta.training_losses)} epochs")
    print(f"  {'codec':<22}{'bytes':>8}{'encode+decode (us)':>22}{'vs cbor':>10}")
    for name, (enc, dec) in codecs.items():
        data = enc(meta)
        assert dec(data) == meta
        t = per_call(lambda: dec(enc(meta)))
        base = base or t
        print(f"  {name:<22}{len(data):>8}{t * 1e6:>22.1f}{t / base:>10.2f}")


def hostile_table() -> None:
    cases = {
        "64 KiB of nested arrays": b"\x81" * (64 * 1024 - 1) + b"\x00",
        "declared 4 GiB string": bytes.fromhex("7b00000000ffffffff") + b"x" * 60_000,
        "1000 epochs + set tag": cbor2.dumps({"version": 1, "training_losses": {f"e{i}": 0.1 for i in range(1000)}, "s": {1}}),
        "random 64 KiB": np.random.default_rng(0).bytes(64 * 1024),
    }
    print("\nhostile payloads (refused)")
    for name, data in cases.items():
        def attempt(d=data):
            try:
                decode(d)
            except ValueError:
                pass
        print(f"  {name:<28}{len(data):>8} B {per_call(attempt, 0.2) * 1e6:>10.1f} us")


def strategy_cost(replies_per_round: int = 200) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    configure_logging("json", "INFO")
    arrays = ArrayRecord(Net().state_dict())
    meta = TrainProcessMetadata(1.23, True, {f"epoch_{i}": 1.0 / i for i in range(1, 6)})
    name, record = to_config_record(meta)
    replies = []
    for node in range(1, replies_per_round + 1):
        instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"train_loss": 0.5, "num-examples": 100}), name: record})
        replies.append(Message(content=content, reply_to=instruction))

    class Grid:
        def get_node_ids(self):
            return list(range(1, replies_per_round + 1))

    def screen_only(strategy):
        strategy._screen(1, "train", replies)

    def full_aggregation(strategy):
        strategy.aggregate_train(1, replies)

    with contextlib.redirect_stdout(io.StringIO()):
        ours = build_strategy("fedavg", run_id=1, min_available_nodes=1, min_train_nodes=1, node_wait_timeout=0,
                              expected_metrics={"train": ("train_loss",), "evaluate": ("eval_loss", "eval_acc")})
        list(ours.configure_train(1, arrays, ConfigRecord(), Grid()))
        screen = per_call(lambda: screen_only(ours), 1.0) / replies_per_round
        total = per_call(lambda: full_aggregation(ours), 1.0) / replies_per_round
        from flwr.serverapp.strategy import FedAvg
        plain = FedAvg(min_available_nodes=1)
        flower = per_call(lambda: plain.aggregate_train(1, replies), 1.0) / replies_per_round
    print(f"\nstrategy, {replies_per_round} replies of the real model ({sum(a.numpy().size for a in arrays.values())} parameters)")
    print(f"  screen + decode + log, per reply      {screen * 1e6:>10.1f} us")
    print(f"  our aggregate_train, per reply        {total * 1e6:>10.1f} us")
    print(f"  Flower's FedAvg.aggregate_train       {flower * 1e6:>10.1f} us")
    print(f"  overhead of screening over FedAvg     {total / flower:>10.2f}x")


if __name__ == "__main__":
    codec_table(TrainProcessMetadata(12.5, True, {f"epoch_{i}": 1.0 / i for i in range(1, 6)}), "typical")
    codec_table(TrainProcessMetadata(12.5, False, {f"epoch_{i}": 1.0 / i for i in range(1, 1001)}), "largest allowed")
    hostile_table()
    strategy_cost()
