"""scripts/make_site_data.py: splitting a data set into per-SuperNode site folders."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import site_data
from app.task import _train_and_test
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "make_site_data.py"
_spec = importlib.util.spec_from_file_location("make_site_data", SCRIPT)
make_site_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_site_data)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = make_site_data.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def split_json(capsys, out_dir: Path, *argv: str) -> dict:
    code, out, err = run(capsys, "--sites", 3, "--out", out_dir, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A site file as (x, y), read independently of the script."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return arrays["x"], arrays["y"]
    rows = list(csv.reader(path.open()))
    table = np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


def site_files(site: Path) -> list[Path]:
    return sorted(p for p in site.iterdir() if p.stem in ("train", "val"))


def all_rows(out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_file(f) for site in sorted(out_dir.glob("site-*")) for f in site_files(site)]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def digits_train() -> tuple[np.ndarray, np.ndarray]:
    train, _ = _train_and_test(42)
    return train.inputs.reshape(len(train), -1), train.labels


def sorted_rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() + label.tobytes() for row, label in zip(x.astype(np.float32), y.astype(np.int64)))


# --- The default input: the digits' training part ------------------------------------


def test_sites_hold_exactly_the_digits_training_part(tmp_path, capsys):
    summary = split_json(capsys, tmp_path)
    x, y = digits_train()
    assert sum(s["train"] + s["val"] for s in summary["sites"]) == len(y)
    # Every training sample once, nothing else: the same multiset of (row, label).
    assert sorted_rows(*all_rows(tmp_path)) == sorted_rows(x, y)


def test_no_server_test_sample_is_in_any_site(tmp_path, capsys):
    split_json(capsys, tmp_path, "--partitioning", "dirichlet", "--alpha", "0.3")
    _, test = _train_and_test(42)
    test_rows = {row.tobytes() for row in test.inputs.reshape(len(test), -1)}
    site_x, _ = all_rows(tmp_path)
    assert len(site_x) > 0 and not test_rows & {row.tobytes() for row in site_x}


def test_iid_site_sizes_differ_by_at_most_one(tmp_path, capsys):
    code, out, err = run(capsys, "--sites", 7, "--out", tmp_path, "--json")
    sizes = [s["train"] + s["val"] for s in json.loads(out)["sites"]]
    assert code == 0 and len(sizes) == 7 and max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_skews_sizes_and_labels(tmp_path, capsys):
    sites = split_json(capsys, tmp_path, "--partitioning", "dirichlet", "--alpha", "0.1")["sites"]
    sizes = [s["train"] + s["val"] for s in sites]
    assert max(sizes) - min(sizes) > 50
    mixes = [s["labels"] for s in sites]
    assert mixes[0] != mixes[1] != mixes[2]
    assert any(count == 0 for mix in mixes for count in mix.values())  # some site lacks a label


def test_same_seed_same_files_other_seed_other_files(tmp_path, capsys):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        split_json(capsys, tmp_path / name, "--partitioning", "dirichlet", "--seed", seed)
    same = [read_file(tmp_path / name / "site-2" / "val.npz") for name in ("a", "b", "c")]
    assert np.array_equal(same[0][0], same[1][0]) and np.array_equal(same[0][1], same[1][1])
    assert not (same[0][0].shape == same[2][0].shape and np.array_equal(same[0][0], same[2][0]))


def test_npz_files_are_plain_arrays(tmp_path, capsys):
    summary = split_json(capsys, tmp_path)
    for entry in summary["sites"]:
        for name, expected in (("train", entry["train"]), ("val", entry["val"])):
            with np.load(Path(entry["path"]) / f"{name}.npz", allow_pickle=False) as arrays:
                assert sorted(arrays.files) == ["x", "y"]
                x, y = arrays["x"], arrays["y"]
            assert x.dtype == np.float32 and x.shape == (expected, 64)
            assert y.dtype == np.int64 and y.shape == (expected,)


def test_csv_header_rows_and_exact_values(tmp_path, capsys):
    summary = split_json(capsys, tmp_path / "csv", "--format", "csv")
    split_json(capsys, tmp_path / "npz")  # the same split, as npz
    for entry in summary["sites"]:
        rows = list(csv.reader((Path(entry["path"]) / "train.csv").open()))
        assert rows[0] == [f"f{i}" for i in range(64)] + ["label"]
        assert len(rows) == 1 + entry["train"]
        assert all(row[-1].isdigit() for row in rows[1:])
        csv_x, csv_y = read_file(Path(entry["path"]) / "train.csv")
        npz_x, npz_y = read_file(tmp_path / "npz" / entry["site"] / "train.npz")
        assert np.array_equal(csv_x, npz_x) and np.array_equal(csv_y, npz_y)


def test_formats_alternate_among_sites(tmp_path, capsys):
    summary = split_json(capsys, tmp_path, "--format", "npz,csv")
    assert [s["format"] for s in summary["sites"]] == ["npz", "csv", "npz"]
    assert [[f.name for f in site_files(tmp_path / f"site-{i}")] for i in (1, 2, 3)] == [
        ["train.npz", "val.npz"], ["train.csv", "val.csv"], ["train.npz", "val.npz"]]


def test_json_summary_matches_the_files(tmp_path, capsys):
    summary = split_json(capsys, tmp_path, "--partitioning", "dirichlet", "--format", "csv,npz")
    for entry in summary["sites"]:
        train = read_file(next(Path(entry["path"]).glob("train.*")))
        val = read_file(next(Path(entry["path"]).glob("val.*")))
        assert (entry["train"], entry["val"]) == (len(train[1]), len(val[1]))
        labels = np.concatenate([train[1], val[1]])
        assert entry["labels"] == {str(k): int((labels == k).sum()) for k in range(10)}


def test_val_split_sizes(tmp_path, capsys):
    code, out, err = run(capsys, "--sites", 2, "--out", tmp_path / "none", "--val-fraction", 0, "--json")
    assert code == 0 and all(s["val"] == 0 for s in json.loads(out)["sites"])
    assert sorted(p.name for p in (tmp_path / "none" / "site-1").iterdir()) == ["train.npz"]
    # Tiny sites still validate on one sample, and keep one to train on.
    splits = make_site_data.split_sites(np.zeros((6, 2)), np.arange(6) % 2, 3, "iid", 0.5, 0.01, seed=0)
    assert [(len(ty), len(vy)) for _, ty, _, vy in splits] == [(1, 1)] * 3


def test_warns_of_sites_too_small_for_a_supernode(tmp_path, capsys):
    np.savez(tmp_path / "data.npz", x=np.zeros((12, 2)), y=np.arange(12) % 2)
    code, _, err = run(capsys, "--sites", 3, "--out", tmp_path / "out", "--input", tmp_path / "data.npz")
    assert code == 0 and "site-1 has 3 training samples" in err and f"at least {site_data.MIN_TRAIN_EXAMPLES}" in err


def test_sites_load_with_the_supernodes_reader(tmp_path, capsys):
    split_json(capsys, tmp_path, "--format", "npz,csv")
    for i in (1, 2):
        site = site_data.load_site(tmp_path / f"site-{i}", features=64, num_classes=10)
        assert site.train.x.shape[1] == 64 and len(site.validation.y) > 0


# --- Your own input ------------------------------------------------------------------


def test_npz_input_round_trips(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 3)), rng.integers(0, 3, size=40)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    split_json(capsys, tmp_path / "out", "--input", tmp_path / "data.npz", "--format", "npz,csv")
    assert sorted_rows(*all_rows(tmp_path / "out")) == sorted_rows(x.reshape(40, 6), y)


def test_csv_input_round_trips(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)).astype(np.float32), rng.integers(0, 4, size=30)
    lines = ["a,diagnosis,b,c"] + [f"{r[0]!r},{label},{r[1]!r},{r[2]!r}" for r, label in zip(x.tolist(), y)]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    split_json(capsys, tmp_path / "out", "--input", tmp_path / "data.csv", "--label-column", "diagnosis",
               "--format", "csv")
    assert sorted_rows(*all_rows(tmp_path / "out")) == sorted_rows(x, y)


BAD_INPUTS = {
    "missing file": ("nothing.npz", None, "no such file"),
    "wrong extension": ("data.txt", "1,2\n", "expected a .npz or .csv file"),
    "npz without y": ("data.npz", {"x": np.zeros((3, 2))}, "no array y"),
    "no label column": ("data.csv", "a,b\n1,2\n", "no label column 'label'"),
    "non-numeric cell": ("data.csv", "a,label\n1,0\nabc,1\n", "line 3, column 'a' is not a number (it holds 'abc')"),
    "x/y lengths differ": ("data.npz", {"x": np.zeros((3, 2)), "y": np.zeros(2)}, "one label per sample of x (3,)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    name, content, message = BAD_INPUTS[case]
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "--sites", 2, "--out", tmp_path / "out", "--input", path)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_bad_format_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_site_data.main(["--sites", "2", "--out", str(tmp_path), "--format", "npz,parquet"])
    assert exit_info.value.code == 2 and "parquet" in capsys.readouterr().err


# --- Existing folders ----------------------------------------------------------------


def test_refuses_a_non_empty_site_folder_unless_forced(tmp_path, capsys):
    (tmp_path / "site-2").mkdir()
    (tmp_path / "site-2" / "train.csv").write_text("old")
    code, _, err = run(capsys, "--sites", 3, "--out", tmp_path)
    assert code == 2 and "site-2" in err and "--force" in err
    assert not (tmp_path / "site-1").exists()  # refused before writing anything
    assert (tmp_path / "site-2" / "train.csv").read_text() == "old"
    code, _, err = run(capsys, "--sites", 3, "--out", tmp_path, "--force")
    # Replaced, not added to: a site with both train.csv and train.npz is refused by a SuperNode.
    assert code == 0 and sorted(p.name for p in (tmp_path / "site-2").iterdir()) == ["train.npz", "val.npz"]


# --- The command line ----------------------------------------------------------------


def test_cli_prints_the_table(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/make_site_data.py", "--sites", "3", "--out", str(tmp_path), "--format", "npz,csv"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["site", "format", "train", "val", *map(str, range(10))]
    assert [line.split()[:2] for line in lines[1:4]] == [["site-1", "npz"], ["site-2", "csv"], ["site-3", "npz"]]
    total = lines[4].split()
    assert total[0] == "total" and int(total[1]) + int(total[2]) == len(digits_train()[1])
    assert len({len(line) for line in lines}) == 1  # aligned columns
