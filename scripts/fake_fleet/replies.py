"""The fake ClientApp: a node's reply to a train or evaluate message, as the real ClientApp's
(app/client_app.py) in metrics and CBOR metadata, without training."""

from __future__ import annotations

import zlib

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata, to_config_record

from .settings import Settings

# The metric names app/task.py declares (TRAIN_METRICS, EVALUATE_METRICS; tests hold them equal):
# not imported from there, because app.task imports torch, 300 MB in every process.
TRAIN_METRICS, EVALUATE_METRICS = ("train_loss",), ("eval_loss", "eval_acc")
WEIGHT_KEY = "num-examples"


def _direction(seed: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(seed.encode())).standard_normal(shape)


def train_reply(msg: Message, config: dict, node: int, settings: Settings, seconds: float) -> Message:
    """The received arrays plus a step common to all nodes (by round and array name) and a
    tenth of it in per-node noise: every update about as far from the model as the others
    and pointing their way, as screening wants (app/screening.py, app/strategy.py)."""
    server_round = int(msg.content["config"]["server-round"])
    arrays = {}
    for name, array in msg.content["arrays"].items():
        value = array.numpy()
        if value.dtype.kind == "f":
            step = _direction(f"{server_round}/{name}", value.shape) + 0.1 * _direction(
                f"{server_round}/{name}/{node}", value.shape)
            value = (value + settings.step * step).astype(value.dtype)
        arrays[name] = Array(value)
    loss = 2.3 / (1 + 0.1 * server_round) + 0.01 * (node % 10)
    metrics = {"train_loss": loss}
    if config.get("one-exchange", True):  # the received model's evaluation rides along (app/server_app.py)
        metrics.update(eval_loss=loss * 1.05, eval_acc=min(0.99, 0.1 + 0.08 * server_round))
    name, meta = to_config_record(TrainProcessMetadata(
        training_time=seconds, converged=False, training_losses={"epoch_1": loss}, device="cpu"))
    content = RecordDict({"arrays": ArrayRecord(array_dict=arrays),
                          "metrics": MetricRecord({**metrics, WEIGHT_KEY: settings.examples}), name: meta})
    return Message(content, reply_to=msg)


def evaluate_reply(msg: Message, node: int, settings: Settings, seconds: float) -> Message:
    name, meta = to_config_record(EvaluateProcessMetadata(evaluation_time=seconds))
    metrics = {"eval_loss": 1.0 + 0.01 * (node % 10), "eval_acc": 0.5, WEIGHT_KEY: settings.examples}
    return Message(RecordDict({"metrics": MetricRecord(metrics), name: meta}), reply_to=msg)


def reply_to(msg: Message, config: dict, node: int, settings: Settings, seconds: float) -> Message:
    kind = msg.metadata.message_type.split(".")[0]  # "train", or "train.<name>" (Flower's form)
    if kind in ("train", "evaluate"):
        return (train_reply(msg, config, node, settings, seconds) if kind == "train"
                else evaluate_reply(msg, node, settings, seconds))
    return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"fake node: no {kind!r} handler"), reply_to=msg)
