"""A ClientApp that lies: the real app's training, then a corrupted reply.

For the fault tests only (tests/test_liars.py). It is shipped to the SuperNodes
as part of a FAB that the test assembles (this file, `app/` and a pyproject whose
clientapp is `rogue_client:app`), so the images and the real app stay honest.

Run config `attacks`: "PARTITION=ATTACK/ATTACK/... PARTITION=..."; a node runs
the attack at position (round - 1) modulo the list's length, "none" for an
honest round. Nodes not named are honest.
"""

from __future__ import annotations

import io

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from app import client_app

app = ClientApp()


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _map_first(arrays: ArrayRecord, change) -> ArrayRecord:
    items = list(arrays.items())
    name, first = items[0]
    return ArrayRecord({name: change(first), **dict(items[1:])})


ATTACKS = {
    "nan": lambda a, m: (_map_first(a, lambda x: Array(np.full(x.shape, np.nan, dtype=x.dtype))), m),
    "inf": lambda a, m: (_map_first(a, lambda x: Array(np.where(np.arange(np.prod(x.shape)).reshape(x.shape) == 0,
                                                                  np.inf, x.numpy()).astype(x.dtype))), m),
    # Declares the global model's shape, carries one value (Flower would broadcast it).
    "shape": lambda a, m: (_map_first(a, lambda x: Array(dtype=x.dtype, shape=tuple(x.shape), stype=x.stype,
                                                           data=_npy(np.ones(1, dtype=x.dtype)))), m),
    "dtype": lambda a, m: (_map_first(a, lambda x: Array(x.numpy().astype(np.float64))), m),
    "encoding": lambda a, m: (_map_first(a, lambda x: Array(dtype=x.dtype, shape=tuple(x.shape),
                                                              stype="torch.Tensor", data=x.data)), m),
    "examples": lambda a, m: (a, {**m, "num-examples": 10**12}),
    "metric_list": lambda a, m: (a, {**m, "train_loss": [0.1, 0.2]}),
    "scale": lambda a, m: (ArrayRecord({k: Array(v.numpy() * 1e6) for k, v in a.items()}), m),
    # Noise as large as the honest weights: finite, of a plausible norm (flanders' Gaussian attackers).
    "noise": lambda a, m: (ArrayRecord({k: Array(_noise_like(v.numpy())) for k, v in a.items()}), m),
}


def _noise_like(values: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng()
    return rng.normal(values.mean(), values.std() + 1e-3, values.shape).astype(values.dtype)


def attack_for(context: Context, server_round: int) -> str:
    own = str(context.node_config["partition-id"])
    for entry in str(context.run_config.get("attacks", "")).split():
        partition, _, plan = entry.partition("=")
        if partition == own:
            steps = plan.split("/")
            return steps[(server_round - 1) % len(steps)]
    return "none"


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = client_app.train(msg, context)
    attack = attack_for(context, int(msg.content["config"]["server-round"]))
    if attack == "none":
        return reply
    arrays, metrics = ATTACKS[attack](reply.content["arrays"], dict(reply.content["metrics"]))
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics),
                          "train_metadata": reply.content["train_metadata"]})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return client_app.evaluate(msg, context)
