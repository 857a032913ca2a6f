"""A site's own data folder: every format read, every problem a clear error naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from app import task
from app.site_data import MIN_TRAIN_EXAMPLES, SiteDataError, fingerprint, load_site

RUN_CONFIG = {"seed": 42, "partitioning": "iid", "dirichlet-alpha": 0.5}


def digits(n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    train, _ = task._train_and_test(42)
    pick = np.random.default_rng(seed).choice(len(train), n, replace=False)
    return train.inputs[pick].reshape(n, -1), train.labels[pick]


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, label: str = "label") -> None:
    header = [f"f{i}" for i in range(x.shape[1])] + [label]
    rows = [",".join([*(repr(float(v)) for v in row), str(int(t))]) for row, t in zip(x, y)]
    path.write_text("\n".join([",".join(header), *rows]) + "\n")


def test_an_npz_folder_without_val_holds_out_every_fifth_sample(tmp_path):
    x, y = digits(50)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    site = load_site(tmp_path, features=64, num_classes=10)
    assert len(site.train.y) == 40 and len(site.validation.y) == 10
    np.testing.assert_array_equal(site.validation.x, x[4::5])
    assert site.train.x.dtype == np.float32 and site.train.y.dtype == np.int64


def test_a_csv_folder_with_its_own_val_file(tmp_path):
    x, y = digits(60)
    write_csv(tmp_path / "train.csv", x[:45], y[:45], label="digit")
    write_csv(tmp_path / "val.csv", x[45:], y[45:], label="digit")
    site = load_site(tmp_path, features=64, num_classes=10, label_column="digit")
    np.testing.assert_array_equal(site.train.x, x[:45])
    np.testing.assert_array_equal(site.validation.y, y[45:])


def test_images_in_an_npz_are_flattened_per_sample(tmp_path):
    x, y = digits(20)
    np.savez(tmp_path / "train.npz", x=x.reshape(20, 8, 8), y=y)
    assert load_site(tmp_path, features=64).train.x.shape == (16, 64)


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_a_node_with_data_path_trains_on_its_folder_in_the_models_shape(tmp_path, model):
    x, y = digits(80)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    train, val = task.load_local_data({"data-path": str(tmp_path)}, {**RUN_CONFIG, "model": model})
    assert len(train) == 64 and len(val) == 16
    assert train.inputs.shape[1:] == ((1, 8, 8) if model == "cnn" else (64,))


def broken(tmp_path: Path, case: str) -> Path:
    """A site folder with one problem; returns the path the error must name."""
    x, y = digits(30)
    train = tmp_path / "train.npz"
    if case == "missing folder":
        return tmp_path / "nowhere"
    if case == "empty folder":
        return tmp_path
    if case == "not an npz":
        train.write_bytes(b"PK\x03\x04 this is not a zip file")
    elif case == "pickled objects":
        np.savez(train, x=np.array([object()] * 30, dtype=object), y=y)
    elif case == "no y":
        np.savez(train, x=x)
    elif case == "wrong feature count":
        np.savez(train, x=x[:, :10], y=y)
    elif case == "label out of range":
        np.savez(train, x=x, y=np.where(np.arange(30) == 7, 10, y))
    elif case == "negative label":
        np.savez(train, x=x, y=np.where(np.arange(30) == 3, -1, y))
    elif case == "fractional label":
        np.savez(train, x=x, y=y + 0.5)
    elif case == "not finite":
        x[5, 3] = np.nan
        np.savez(train, x=x, y=y)
    elif case == "infinite":
        x[9, 0] = np.inf
        np.savez(train, x=x, y=y)
    elif case == "too few":
        np.savez(train, x=x[: MIN_TRAIN_EXAMPLES - 1], y=y[: MIN_TRAIN_EXAMPLES - 1])
    elif case == "x and y differ in length":
        np.savez(train, x=x, y=y[:-1])
    elif case == "csv without label column":
        train = tmp_path / "train.csv"
        write_csv(train, x, y, label="target")
    elif case == "csv with a word":
        train = tmp_path / "train.csv"
        write_csv(train, x, y)
        lines = train.read_text().splitlines()
        lines[4] = "seven," + lines[4].split(",", 1)[1]
        train.write_text("\n".join(lines))
    elif case == "csv short row":
        train = tmp_path / "train.csv"
        write_csv(train, x, y)
        train.write_text(train.read_text() + "0.5,1\n")
    elif case == "csv empty":
        train = tmp_path / "train.csv"
        train.write_text("")
    elif case == "two train files":
        np.savez(train, x=x, y=y)
        write_csv(tmp_path / "train.csv", x, y)
        return tmp_path
    elif case == "val with other features":
        np.savez(train, x=x, y=y)
        np.savez(tmp_path / "val.npz", x=x[:, :32], y=y)
        return tmp_path / "val.npz"
    elif case == "unreadable":  # (permissions: the Docker test, as uid 49999; root reads anything)
        train.mkdir()
    return train


CASES = {
    "missing folder": "no such folder",
    "empty folder": "no train.npz or train.csv | found: nothing",
    "not an npz": "not a readable .npz file",
    "pickled objects": "not a plain numeric .npz",
    "no y": "no array y",
    "wrong feature count": "10 features per sample, but the model takes 64",
    "label out of range": "labels must be in 0..9 (run config num-classes); sample 7 is not | sample 7 has 10",
    "negative label": "sample 3 is not | sample 3 has -1",
    "fractional label": "labels must be whole numbers; sample 0 is not | sample 0 has",
    "not finite": "non-finite features (NaN or infinity), the first is sample 5",
    "infinite": "the first is sample 9",
    "too few": f"{MIN_TRAIN_EXAMPLES - 1} training samples; at least {MIN_TRAIN_EXAMPLES}",
    "x and y differ in length": "one label per sample",
    "csv without label column": "no label column 'label' in the header | header: f0, f1",
    "csv with a word": "line 5, column 'f0' is not a number | it holds 'seven'",
    "csv short row": "line 32 has 2 values; the header names 65 columns",
    "csv empty": "empty file",
    "two train files": "both train.npz and train.csv",
    "val with other features": "32 features per sample, but train.npz has 64",
    "unreadable": "cannot read the file (Is a directory)",
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_problem_is_a_clear_error_naming_the_file(tmp_path, case):
    path = broken(tmp_path, case)
    model = {} if case == "val with other features" else {"features": 64, "num_classes": 10}
    with pytest.raises(SiteDataError) as error:
        load_site(tmp_path if case != "missing folder" else path, **model)
    assert error.value.path == path
    problem, _, detail = CASES[case].partition(" | ")
    assert problem in error.value.problem, error.value.problem
    assert detail in error.value.detail, error.value.detail
    assert str(error.value) == f"{path}: {error.value.problem}"  # what a server may see


def test_what_the_server_may_see_holds_no_value_from_the_data(tmp_path):
    x, y = digits(30)
    train = tmp_path / "train.csv"
    write_csv(train, x, y)
    lines = train.read_text().splitlines()
    lines[3] = "Jane Doe 1971-02-03," + lines[3].split(",", 1)[1]
    train.write_text("\n".join(lines))
    with pytest.raises(SiteDataError) as error:
        load_site(tmp_path)
    assert "Jane" not in str(error.value) and "Jane Doe" in error.value.detail


def test_without_a_model_only_what_needs_none_is_checked(tmp_path):
    # At a SuperNode's start no run has named a model yet: other feature counts pass.
    x, y = digits(30)
    np.savez(tmp_path / "train.npz", x=x[:, :10], y=y + 20)
    assert load_site(tmp_path).train.x.shape == (24, 10)


def test_the_fingerprint_changes_when_a_file_does(tmp_path):
    x, y = digits(30)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    before = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == before
    np.savez(tmp_path / "train.npz", x=x, y=(y + 1) % 10)
    os.utime(tmp_path / "train.npz", ns=(1, 1))
    assert fingerprint(tmp_path) != before


def test_a_csv_with_quoted_numbers_reads_the_same(tmp_path):
    # numpy's fast reader refuses quotes; the row-by-row reader takes over, same result.
    x, y = digits(20)
    write_csv(tmp_path / "train.csv", x, y)
    plain = load_site(tmp_path).train
    lines = (tmp_path / "train.csv").read_text().splitlines()
    quoted = [lines[0]] + [",".join(f'"{cell}"' for cell in line.split(",")) for line in lines[1:]]
    (tmp_path / "train.csv").write_text("\n".join(quoted) + "\n")
    again = load_site(tmp_path).train
    np.testing.assert_array_equal(plain.x, again.x)
    np.testing.assert_array_equal(plain.y, again.y)
