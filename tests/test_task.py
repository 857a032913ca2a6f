"""Data partitions, convergence and one local training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app import task


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_partitions", [1, 3, 10, 1000])
def test_partitions_cover_the_data_once_and_none_is_empty(partitioning, num_partitions):
    train, _ = task._train_and_test(42)
    parts = task.partition_indices(train.labels, num_partitions, partitioning, alpha=0.3, seed=42)
    assert len(parts) == num_partitions and all(len(p) >= 1 for p in parts)
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(len(train)))


def test_iid_sizes_differ_by_at_most_one():
    train, _ = task._train_and_test(42)
    sizes = [len(p) for p in task.partition_indices(train.labels, 7, "iid", 0.5, 42)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_is_skewed_and_reproducible():
    train, _ = task._train_and_test(42)
    a = task.partition_indices(train.labels, 5, "dirichlet", 0.1, 42)
    b = task.partition_indices(train.labels, 5, "dirichlet", 0.1, 42)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    label_counts = [np.bincount(train.labels[p], minlength=10) for p in a]
    # With alpha 0.1 most partitions are dominated by few classes.
    assert np.mean([c.max() / c.sum() for c in label_counts]) > 0.3


def test_partition_and_test_set_are_disjoint_and_fixed():
    tr, va = task.load_partition(0, 3)
    test = task.load_test_set(42)
    assert len(tr) > 0 and len(va) > 0 and len(test) == int(1797 * 0.2)
    train_rows = {r.tobytes() for r in tr.images} | {r.tobytes() for r in va.images}
    assert len(train_rows & {r.tobytes() for r in test.images}) < 5  # digits has a few duplicate images


@pytest.mark.parametrize(("bad", "message"), [
    ({"partition_id": 3, "num_partitions": 3}, "partition-id must be in"),
    ({"partition_id": 0, "num_partitions": 5000}, "num-partitions must be between 1 and"),
    ({"partition_id": 0, "num_partitions": 2, "partitioning": "zipf"}, "partitioning must be"),
])
def test_bad_partition_settings_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        task.load_partition(**bad)


def test_has_converged():
    assert task.has_converged([1.0, 0.999], 0.01)
    assert not task.has_converged([1.0, 0.5], 0.01)
    assert not task.has_converged([1.0], 0.01)


def test_training_lowers_the_loss_and_reports_metadata():
    trainset, valset = task.load_partition(0, 2)
    net = task.Net()
    before, _, _ = task.evaluate(net, valset)
    loss, meta = task.train(net, trainset, epochs=3, lr=0.1, batch_size=32, tolerance=0.01, seed=1)
    after, accuracy, timing = task.evaluate(net, valset)
    assert after < before and accuracy > 0.2
    assert list(meta.training_losses) == ["epoch_1", "epoch_2", "epoch_3"]
    assert meta.training_losses["epoch_3"] == loss and meta.training_time > 0 and timing.evaluation_time > 0


def test_the_shipped_digits_are_scikit_learns():
    from sklearn.datasets import load_digits  # dev extra only: the app never imports it

    images, labels = task.load_digits()
    reference = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images[:, 0], (reference.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(labels, reference.target)


def test_the_app_imports_neither_scikit_learn_nor_scipy():
    from tests.conftest import run_python

    result = run_python("import sys, app.client_app, app.server_app; "
                        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))",
                        LOG_FORMAT="console")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_extra_model_megabytes_are_shipped_but_never_trained():
    net = task.Net(extra_mb=2)
    assert net.state_dict()["extra"].numel() * 4 == 2 * 2**20
    trainset, _ = task.load_partition(0, 4, partitioning="iid", alpha=0.5, seed=1)
    task.train(net, trainset, epochs=1, lr=0.1, batch_size=32, tolerance=0.01, seed=1)
    assert torch.equal(net.state_dict()["extra"], task.Net(extra_mb=2).state_dict()["extra"])
    assert "extra" not in task.Net().state_dict()
