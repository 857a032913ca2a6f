"""A ClientApp that lies: the real app's training, then a corrupted reply.

For the fault tests only (tests/test_liars.py). It is shipped to the SuperNodes
as part of a FAB that the test assembles (this file, `app/` and a pyproject whose
clientapp is `rogue_client:app`), so the images and the real app stay honest.

Run config `attacks`: "PARTITION=ATTACK/ATTACK/... PARTITION=..."; a node runs
the attack at position (round - 1) modulo the list's length, "none" for an
honest round. Nodes not named are honest.

The attacks that pass screening (finite, the right names, shapes and dtypes, honest
metadata), the ones a robust default must bound:
  boost     its honest update x BOOST (model replacement)
  flip      its honest update turned into a step the other way, x BOOST
  flip1     the same the other way at the honest size (no norm check sees it)
  noise     Gaussian noise of the honest weights' mean and spread, in place of the model
  labelflip trained honestly on its data with every label y as (classes - 1 - y)
  collude   every party that runs it sends the very same update: the output layer's
            bias for class 0 raised by COLLUDE_BIAS (every prediction pushed to 0)
  heavy     its flipped update, claiming MAX_CLAIM examples (a weighted mean's share)
And one that is no attack: `absent`, a ClientApp that fails every time, so that the site's
data is missing from the model (what the best defence against a liar can reach).
"""

from __future__ import annotations

import io
from unittest import mock

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from app import client_app, task

app = ClientApp()
BOOST = 10.0
COLLUDE_BIAS = 50.0
MAX_CLAIM = 100_000


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


def _step(sent: ArrayRecord, trained: ArrayRecord, factor: float) -> ArrayRecord:
    """sent + factor x (trained - sent), array by array, in each array's dtype."""
    stepped = {}
    for key, array in trained.items():
        value, start = array.numpy(), sent[key].numpy()
        stepped[key] = Array((start + factor * (value - start)).astype(start.dtype)) if start.dtype.kind == "f" else array
    return ArrayRecord(stepped)


def _collude(sent: ArrayRecord) -> ArrayRecord:
    """The same update from everyone who sends it: the last bias (the output layer's) raised for class 0."""
    items = {k: v.numpy().copy() for k, v in sent.items()}
    last_bias = [k for k, v in items.items() if k.endswith("bias") and v.ndim == 1][-1]
    items[last_bias][0] += COLLUDE_BIAS
    return ArrayRecord({k: Array(v) for k, v in items.items()})


UPDATE_ATTACKS = {  # (the model sent, the honestly trained reply's arrays, metrics) -> (arrays, metrics)
    "boost": lambda g, a, m: (_step(g, a, BOOST), m),
    "flip": lambda g, a, m: (_step(g, a, -BOOST), m),
    "flip1": lambda g, a, m: (_step(g, a, -1.0), m),
    "collude": lambda g, a, m: (_collude(g), m),
    "heavy": lambda g, a, m: (_step(g, a, -BOOST), {**m, "num-examples": MAX_CLAIM}),
}


def _flipped_labels(context: Context):
    """This node's own data with every label y read as (classes - 1 - y): poisoned data, honest code."""
    trainset, valset = task.load_local_data(context.node_config, context.run_config)
    classes = int(context.run_config["num-classes"])
    return task.Split(trainset.inputs, (classes - 1 - trainset.labels).astype(trainset.labels.dtype)), valset


def _noise_like(values: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(values.size)  # the same draw for the same model: runs compare
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
    attack = attack_for(context, int(msg.content["config"]["server-round"]))
    if attack == "absent":
        raise RuntimeError("this site takes no part (attack 'absent')")
    if attack == "labelflip":
        with mock.patch.object(client_app, "_local_data", _flipped_labels):
            return client_app.train(msg, context)
    sent = ArrayRecord({k: Array(v.numpy().copy()) for k, v in msg.content["arrays"].items()})
    reply = client_app.train(msg, context)
    if attack == "none":
        return reply
    if attack in UPDATE_ATTACKS:
        arrays, metrics = UPDATE_ATTACKS[attack](sent, reply.content["arrays"], dict(reply.content["metrics"]))
    else:
        arrays, metrics = ATTACKS[attack](reply.content["arrays"], dict(reply.content["metrics"]))
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics),
                          "train_metadata": reply.content["train_metadata"]})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return client_app.evaluate(msg, context)
