"""What the ClientApp and ServerApp ask of the machine learning: the run's model,
a node's data, the server's test set, and the local training and evaluation loops.

This file is the contract for bringing your own model and data
(docs/bring-your-own-model.md): the apps call only the functions listed there.

Data, by default: scikit-learn's digits (1,797 8x8 images of digits 0-9), shipped
inside the app as app/data/digits.json (59 kB; scripts/make_digits_data.py), so
nothing is downloaded, and nothing but numpy is imported, to read it. A fixed fifth
of it is the server's held-out test set; the rest is split among SuperNodes by
partition. A SuperNode given node config `data-path` trains on its own folder
instead (app/site_data.py).
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import zlib
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from app import models, site_data
from app.metadata import EvaluateProcessMetadata, TrainProcessMetadata
from app.models import build_model  # noqa: F401 - part of the contract: the run's model
from app.run_config import default, setting

# The metrics a ClientApp reports besides "num-examples", declared once: `train` and
# `evaluate` return exactly these keys, the ClientApp sends them as they are, and the
# server rejects a reply with any other (app/screening.py). The server's own evaluation
# (and its model guard) reads eval_loss and eval_acc.
TRAIN_METRICS = ("train_loss",)
EVALUATE_METRICS = ("eval_loss", "eval_acc")
TEST_FRACTION = 0.2  # of the whole data set, held out for the server
VALIDATION_EVERY = site_data.VALIDATION_EVERY  # every 5th sample of a partition is its local validation set
DIGITS_FILE = Path(__file__).resolve().parent / "data" / "digits.json"
# server-test-set="folder": where the server's operator mounts its own test set (read-only)
SERVER_TEST_DATA = "/var/lib/flower/test-data"
# An NVIDIA GPU where the image has CUDA (TORCH=cuda) and the container one
# (docker/compose.gpu.yaml); the CPU otherwise. Models travel on the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- Data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray  # (n, *the model's input shape) float32; the digits: (n, 1, 8, 8) in [0, 1]
    labels: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        dataset = TensorDataset(torch.from_numpy(self.inputs), torch.from_numpy(self.labels))
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _unpack(packed: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(packed["zlib_base64"]))
    return np.frombuffer(raw, dtype=packed["dtype"]).reshape(packed["shape"])


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images as float32 in [0, 1], shape (n, 1, 8, 8); labels as int64)."""
    document = json.loads(DIGITS_FILE.read_text())
    images = _unpack(document["images"]).astype(np.float32) / 16.0
    return images[:, None, :, :], _unpack(document["labels"]).astype(np.int64)


@lru_cache(maxsize=4)
def _train_and_test(seed: int) -> tuple[Split, Split]:
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def load_test_set(run_config: Mapping) -> Split | None:
    """The server's held-out test set, shaped for the run's model: the bundled digits' fifth
    ("digits"), the server operator's own file ("folder": test.npz or test.csv in
    $SERVER_TEST_DATA), or None ("none": no server-side evaluation)."""
    choice = str(setting(run_config, "server-test-set"))
    if choice == "none":
        return None
    shape = models.input_shape(run_config)
    if choice == "folder":
        table = site_data.load_test_file(Path(os.getenv("SERVER_TEST_DATA", SERVER_TEST_DATA)),
                                         features=math.prod(shape), num_classes=models.num_classes(run_config))
        return Split(site_data.as_model_input(table.x, shape, table.path), table.y)
    if choice != "digits":
        raise ValueError(f"server-test-set must be 'digits', 'folder' or 'none', got {choice!r}")
    test = _train_and_test(int(run_config["seed"]))[1]
    if math.prod(shape) != test.inputs[0].size:
        raise ValueError(f"the digits test set has {test.inputs[0].size} features per sample, but the model "
                         f"takes {math.prod(shape)}: set server-test-set=none, or num-features={test.inputs[0].size}")
    return Split(test.inputs.reshape(len(test), *shape), test.labels)


def load_local_data(node_config: Mapping, run_config: Mapping) -> tuple[Split, Split]:
    """This SuperNode's (train, validation) data, shaped for the run's model: its own
    folder (node config data-path), else its partition of the bundled digits."""
    shape = models.input_shape(run_config)
    if "data-path" in node_config:
        site = site_data.load_site(Path(str(node_config["data-path"])), features=math.prod(shape),
                                   num_classes=models.num_classes(run_config),
                                   label_column=str(node_config.get("label-column", "label")))
        return tuple(Split(site_data.as_model_input(t.x, shape, t.path), t.y) for t in (site.train, site.validation))
    missing = [key for key in ("partition-id", "num-partitions") if key not in node_config]
    if missing:
        raise ValueError(
            f"node config lacks {', '.join(missing)}: start the SuperNode with "
            '--node-config "partition-id=<N> num-partitions=<TOTAL>", or data-path=<folder> for its own data'
        )
    train, val = load_partition(int(node_config["partition-id"]), int(node_config["num-partitions"]),
                                partitioning=str(run_config["partitioning"]),
                                alpha=float(run_config["dirichlet-alpha"]), seed=int(run_config["seed"]))
    return tuple(Split(site_data.as_model_input(part.inputs.reshape(len(part), -1), shape, DIGITS_FILE), part.labels)
                 for part in (train, val))


def partition_indices(
    labels: np.ndarray, num_partitions: int, partitioning: str, alpha: float, seed: int
) -> list[np.ndarray]:
    """Split sample indices among partitions; every partition gets at least one.

    iid: a shuffled round-robin, so sizes differ by at most one.
    dirichlet: per class, shares drawn from Dirichlet(alpha) (small alpha, more skew).
    """
    if num_partitions < 1 or num_partitions > len(labels):
        raise ValueError(f"num-partitions must be between 1 and {len(labels)}, got {num_partitions}")
    rng = np.random.default_rng(seed)
    if partitioning == "iid":
        order = rng.permutation(len(labels))
        return [np.sort(order[i::num_partitions]) for i in range(num_partitions)]
    if partitioning != "dirichlet":
        raise ValueError(f"partitioning must be 'iid' or 'dirichlet', got {partitioning!r}")
    if not alpha > 0:
        raise ValueError(f"dirichlet-alpha must be positive, got {alpha}")
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts)):
            part.extend(chunk.tolist())
    # Skewed draws leave some partitions empty; give each one a sample from the largest.
    for part in parts:
        if not part:
            largest = max(parts, key=len)
            part.append(largest.pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def load_partition(
    partition_id: int, num_partitions: int, partitioning: str = default("partitioning"),
    alpha: float = default("dirichlet-alpha"), seed: int = default("seed"),
) -> tuple[Split, Split]:
    """A SuperNode's (train, validation) data: the same on every node for one seed.

    More nodes than training samples (a simulation at scale: 10,000 virtual SuperNodes on
    the bundled digits) cannot each have data of their own: the samples are split one per
    partition and node p trains on partition p mod that count, so nodes p and p + 1438 share
    one sample. The run still measures what it is for (scheduling, sampling, aggregation).
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    train, _ = _train_and_test(seed)
    distinct = min(num_partitions, len(train.labels))
    indices = partition_indices(train.labels, distinct, partitioning, alpha, seed)[partition_id % distinct]
    is_val = np.arange(len(indices)) % VALIDATION_EVERY == VALIDATION_EVERY - 1
    if is_val.all() or not is_val.any():  # too small to split: validate on what there is
        is_val[:] = False
        val_idx = indices
    else:
        val_idx = indices[is_val]
    train_idx = indices[~is_val]
    return (
        Split(train.inputs[train_idx], train.labels[train_idx]),
        Split(train.inputs[val_idx], train.labels[val_idx]),
    )


def label_counts(data: Split) -> dict[str, int]:
    """How many samples of each label: sent only when a site opts in (share-label-counts)."""
    labels, counts = np.unique(data.labels, return_counts=True)
    return {str(label): int(count) for label, count in zip(labels, counts)}


# --- Training and evaluation ----------------------------------------------------------


def train(net: nn.Module, data: Split, config: Mapping[str, Any], seed: int) -> tuple[dict[str, float], TrainProcessMetadata]:
    """Train locally as `config` says: the run config, with this node's instruction from the
    strategy applied (app/instructions.py: local-epochs, learning-rate, batch-size). Return
    the TRAIN_METRICS (the last epoch's mean loss) and how training went."""
    epochs, lr = int(setting(config, "local-epochs")), float(setting(config, "learning-rate"))
    batch_size, tolerance = int(setting(config, "batch-size")), float(setting(config, "convergence-tolerance"))
    torch.manual_seed(seed)
    start = time.perf_counter()
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    criterion = nn.CrossEntropyLoss()
    net.to(DEVICE).train()
    losses: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        total, count = 0.0, 0
        for images, labels in data.loader(batch_size, shuffle=True, seed=seed + epoch):
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            net.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            _sgd_momentum_step(params, velocity, lr)
            total += loss.item() * len(labels)
            count += len(labels)
        losses[f"epoch_{epoch}"] = total / max(count, 1)
    net.to("cpu")
    values = list(losses.values())
    meta = TrainProcessMetadata(
        training_time=time.perf_counter() - start,
        converged=has_converged(values, tolerance),
        training_losses=losses,
    )
    return {"train_loss": values[-1]}, meta


def _sgd_momentum_step(params: list[torch.Tensor], velocity: list[torch.Tensor], lr: float, momentum: float = 0.9) -> None:
    """SGD with momentum, as torch.optim.SGD does it.

    Written out because torch.optim imports torch._dynamo on first use, about 4 s
    per process; a deployed SuperNode starts a fresh ClientApp process for every
    message, so that import would be most of each round's training time.
    """
    with torch.no_grad():
        for param, buf in zip(params, velocity):
            buf.mul_(momentum).add_(param.grad)
            param.sub_(lr * buf)


def has_converged(losses: list[float], tolerance: float) -> bool:
    """The last epoch improved the loss by less than `tolerance` (relative)."""
    if len(losses) < 2:
        return False
    previous, last = losses[-2], losses[-1]
    return abs(previous - last) <= tolerance * max(abs(previous), 1e-12)


def evaluate(net: nn.Module, data: Split, batch_size: int = 256) -> tuple[dict[str, float], EvaluateProcessMetadata]:
    """Return the EVALUATE_METRICS (mean loss, accuracy) of the model on `data`, and its timing."""
    start = time.perf_counter()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    net.to(DEVICE).eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in data.loader(batch_size, shuffle=False):
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            outputs = net(images)
            loss += criterion(outputs, labels).item()
            correct += (outputs.argmax(dim=1) == labels).sum().item()
    net.to("cpu")
    n = max(len(data), 1)
    return {"eval_loss": loss / n, "eval_acc": correct / n}, EvaluateProcessMetadata(evaluation_time=time.perf_counter() - start)
