"""Data partitions, convergence and one local training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app import task
from app.models import Net, build_model, input_shape

RUN_CONFIG = {"seed": 42, "partitioning": "iid", "dirichlet-alpha": 0.5}


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
    test = task.load_test_set(RUN_CONFIG)
    assert len(tr) > 0 and len(va) > 0 and len(test) == int(1797 * 0.2)
    train_rows = {r.tobytes() for r in tr.inputs} | {r.tobytes() for r in va.inputs}
    assert len(train_rows & {r.tobytes() for r in test.inputs}) < 5  # digits has a few duplicate images


def test_more_nodes_than_samples_share_partitions_of_one_sample():
    # 10,000 virtual SuperNodes on the digits' 1437 training samples: none is left without data.
    train, _ = task._train_and_test(42)
    samples = len(train.labels)
    first, again = task.load_partition(0, 10_000)[0], task.load_partition(samples, 10_000)[0]
    assert len(first) == 1 and np.array_equal(first.inputs, again.inputs)
    last = task.load_partition(9_999, 10_000)[0]
    assert len(last) == 1 and not np.array_equal(last.inputs, first.inputs)
    with pytest.raises(ValueError, match="num-partitions must be between 1 and"):
        task.partition_indices(train.labels, samples + 1, "iid", 0.5, 42)  # the split itself cannot


@pytest.mark.parametrize(("bad", "message"), [
    ({"partition_id": 3, "num_partitions": 3}, "partition-id must be in"),
    ({"partition_id": 10000, "num_partitions": 10000}, "partition-id must be in"),
    ({"partition_id": 0, "num_partitions": 0}, "partition-id must be in"),
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
    net = Net()
    before, _ = task.evaluate(net, valset)
    metrics, meta = task.train(net, trainset, {"local-epochs": 3, "learning-rate": 0.1, "batch-size": 32,
                                               "convergence-tolerance": 0.01}, seed=1)
    after, timing = task.evaluate(net, valset)
    assert after["eval_loss"] < before["eval_loss"] and after["eval_acc"] > 0.2
    assert set(metrics) == set(task.TRAIN_METRICS) and set(after) == set(task.EVALUATE_METRICS)
    assert list(meta.training_losses) == ["epoch_1", "epoch_2", "epoch_3"]
    assert meta.training_losses["epoch_3"] == metrics["train_loss"] and meta.training_time > 0 and timing.evaluation_time > 0


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
    net = Net(extra_mb=2)
    assert net.state_dict()["extra"].numel() * 4 == 2 * 2**20
    trainset, _ = task.load_partition(0, 4, partitioning="iid", alpha=0.5, seed=1)
    task.train(net, trainset, {"local-epochs": 1}, seed=1)
    assert torch.equal(net.state_dict()["extra"], Net(extra_mb=2).state_dict()["extra"])
    assert "extra" not in Net().state_dict()


@pytest.mark.parametrize(("model", "shape"), [("cnn", (1, 8, 8)), ("mlp", (64,))])
def test_each_model_gets_its_data_in_its_own_shape(model, shape):
    config = {**RUN_CONFIG, "model": model}
    train, val = task.load_local_data({"partition-id": 0, "num-partitions": 3}, config)
    test = task.load_test_set(config)
    assert input_shape(config) == shape
    assert train.inputs.shape[1:] == val.inputs.shape[1:] == test.inputs.shape[1:] == shape
    net = build_model(config)
    assert net(torch.from_numpy(test.inputs[:4])).shape == (4, 10)


def test_the_mlp_learns_the_digits_too():
    config = {**RUN_CONFIG, "model": "mlp"}
    train, val = task.load_local_data({"partition-id": 0, "num-partitions": 2}, config)
    net = build_model(config)
    task.train(net, train, {"local-epochs": 5, "convergence-tolerance": 0.0}, seed=1)
    assert task.evaluate(net, val)[0]["eval_acc"] > 0.8


@pytest.mark.parametrize(("config", "message"), [
    ({"model": "resnet"}, "model must be one of cnn, mlp"),
    ({"model": "mlp", "num-features": 20}, "set server-test-set=none"),
    ({"server-test-set": "mnist"}, "server-test-set must be"),
])
def test_bad_model_settings_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        task.load_test_set({**RUN_CONFIG, **config})


def test_without_the_servers_test_set_there_is_none():
    assert task.load_test_set({**RUN_CONFIG, "server-test-set": "none", "model": "mlp", "num-features": 20}) is None


def test_the_servers_own_test_set_comes_from_its_folder_in_a_sites_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_TEST_DATA", str(tmp_path))
    x, y = np.random.default_rng(0).random((40, 64)), np.arange(40) % 10
    np.savez(tmp_path / "test.npz", x=x, y=y)
    for model, shape in (("cnn", (1, 8, 8)), ("mlp", (64,))):
        test = task.load_test_set({**RUN_CONFIG, "server-test-set": "folder", "model": model})
        assert test.inputs.shape == (40, *shape) and test.labels.tolist() == y.tolist()
    (tmp_path / "test.npz").rename(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="no test.npz or test.csv"):
        task.load_test_set({**RUN_CONFIG, "server-test-set": "folder"})
    np.savez(tmp_path / "test.npz", x=x[:, :10], y=y)
    with pytest.raises(ValueError, match="10 features per sample, but the model takes 64"):
        task.load_test_set({**RUN_CONFIG, "server-test-set": "folder"})
    monkeypatch.setenv("SERVER_TEST_DATA", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="mount the server's test set there"):
        task.load_test_set({**RUN_CONFIG, "server-test-set": "folder"})


def test_a_node_without_partition_or_data_path_is_told_what_to_set():
    with pytest.raises(ValueError, match="data-path=<folder> for its own data"):
        task.load_local_data({}, RUN_CONFIG)
