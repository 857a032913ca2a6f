"""Benchmark: the metadata codec against raw cbor2, pickle and JSON, and the strategy's per-reply cost.

Prints figures measured in this one run (ratios are within the run), then the comparison of
validation machinery (scripts/bench_validation.py: ours, msgspec, pydantic). Usage:
    python scripts/bench_metadata.py
    PYTHONPATH=/tmp/bench-deps python scripts/bench_metadata.py   # with msgspec installed apart
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

from flowerdock_logging import configure_logging  # noqa: E402
from app.metadata import TrainProcessMetadata, decode, encode, from_content, to_config_record  # noqa: E402
from app.round_log import log_client_round  # noqa: E402
from app.aggregators import build_strategy  # noqa: E402
from app.models import Net  # noqa: E402


def per_call(fn, seconds: float = 0.5, rounds: int = 5) -> float:
    """Seconds per call: the best of `rounds` batches that together take about `seconds`.

    The best batch, not the mean of all, so that a busy machine's interruptions do not
    count; every figure in a table is measured the same way, so the ratios hold.
    """
    fn()
    best = float("inf")
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / rounds:
            fn()
            n += 1
        best = min(best, elapsed / n)
    return best


def codec_table(meta: TrainProcessMetadata, label: str) -> None:
    plain = {"version": 1, "kind": "train", **asdict(meta)}
    as_json = lambda m: json.dumps({"version": 1, "kind": "train", **asdict(m)}).encode()  # noqa: E731

    def from_json(data: bytes) -> TrainProcessMetadata:
        return TrainProcessMetadata(**{k: v for k, v in json.loads(data).items() if k not in ("version", "kind")})

    ours = encode(meta)
    codecs = {  # name: (encode, decode, the bytes decoded, what decoding must give back)
        "cbor (ours, checked)": (lambda: encode(meta), decode, ours, meta),
        "cbor2 raw (unchecked)": (lambda: cbor2.dumps(plain), cbor2.loads, ours, cbor2.loads(ours)),
        "pickle (unsafe)": (lambda: pickle.dumps(meta), pickle.loads, pickle.dumps(meta), meta),
        "json (checked)": (lambda: as_json(meta), from_json, as_json(meta), meta),
    }
    timed = {}
    for name, (enc, dec, data, expected) in codecs.items():
        assert dec(data) == expected, name
        timed[name] = (len(data), per_call(enc), per_call(lambda: dec(data)))
    pickle_enc, pickle_dec = timed["pickle (unsafe)"][1:]
    print(f"\n{label}: {len(meta.training_losses)} epochs")
    print(f"  {'codec':<24}{'bytes':>7}{'encode (us)':>13}{'decode (us)':>13}{'enc / pickle':>14}{'dec / pickle':>14}")
    for name, (size, enc_s, dec_s) in timed.items():
        print(f"  {name:<24}{size:>7}{enc_s * 1e6:>13.2f}{dec_s * 1e6:>13.2f}"
              f"{enc_s / pickle_enc:>13.2f}x{dec_s / pickle_dec:>13.2f}x")
    checked, pickled = sum(timed["cbor (ours, checked)"][1:]), pickle_enc + pickle_dec
    print(f"  checked decode / pickle.loads: {timed['cbor (ours, checked)'][2] / pickle_dec:.2f}x; encode+decode: "
          f"checked {checked * 1e6:.1f} us, pickle {pickled * 1e6:.1f} us ({checked / pickled:.2f}x)")


def hostile_table() -> None:
    nan_last = {f"e{i}": 0.1 for i in range(999)} | {"e999": float("nan")}
    cases = {
        "64 KiB of nested arrays": b"\x81" * (64 * 1024 - 1) + b"\x00",
        "declared 4 GiB string": bytes.fromhex("7b00000000ffffffff") + b"x" * 60_000,
        "1000 epochs + set tag": cbor2.dumps({"version": 1, "training_losses": {f"e{i}": 0.1 for i in range(1000)}, "s": {1}}),
        "1000 epochs, last one NaN": cbor2.dumps({"version": 1, "kind": "train", "training_time": 1.0,
                                                  "converged": True, "training_losses": nan_last}),
        "random 64 KiB": np.random.default_rng(0).bytes(64 * 1024),
    }
    print("\nhostile payloads (refused)")
    for name, data in cases.items():
        def attempt(d=data):
            try:
                decode(d)
            except ValueError:
                return
            raise AssertionError(f"{name} was accepted")
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
        # Where the per-reply path goes: the parts of `screen_only`, one at a time.
        outcomes = [ours._judge(reply, "train") for reply in replies]
        judge = per_call(lambda: [ours._judge(reply, "train") for reply in replies], 1.0) / replies_per_round
        metadata = per_call(lambda: [from_content(r.content, TrainProcessMetadata) for r in replies], 0.5)
        metadata /= replies_per_round
        logging = per_call(lambda: [log_client_round(1, 1, "train", o) for o in outcomes], 0.5) / replies_per_round
    print(f"\nstrategy, {replies_per_round} replies of the real model ({sum(a.numpy().size for a in arrays.values())} parameters)")
    print(f"  screen + decode + log, per reply      {screen * 1e6:>10.1f} us")
    print(f"    screening (arrays, metrics, meta)   {judge * 1e6:>10.1f} us")
    print(f"      of which the metadata (decode)    {metadata * 1e6:>10.1f} us")
    print(f"    the client_round log line           {logging * 1e6:>10.1f} us")
    print(f"  our aggregate_train, per reply        {total * 1e6:>10.1f} us")
    print(f"  Flower's FedAvg.aggregate_train       {flower * 1e6:>10.1f} us")
    print(f"  overhead of screening over FedAvg     {total / flower:>10.2f}x")


if __name__ == "__main__":
    codec_table(TrainProcessMetadata(12.5, True, {f"epoch_{i}": 1.0 / i for i in range(1, 6)}), "typical")
    codec_table(TrainProcessMetadata(12.5, False, {f"epoch_{i}": 1.0 / i for i in range(1, 1001)}), "largest allowed")
    hostile_table()
    strategy_cost()
    from scripts.bench_validation import validation_table  # which checker: ours, msgspec, pydantic
    validation_table(per_call)
