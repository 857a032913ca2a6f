"""A site's own data: a folder on the site's disk, read and checked before training.

A SuperNode started with node config `data-path=<folder>` trains on it instead of
the bundled digits (docs/site-data.md). The folder holds

  train.npz or train.csv   the training set (required)
  val.npz   or val.csv     the local validation set (optional; without it, every
                           5th training sample is held out for validation)

  .npz  arrays `x` (n samples, features...) and `y` (n integer labels); read
        without pickle, so a file cannot run code
  .csv  a header row, a label column (node config `label-column`, default
        "label") and every other column one numeric feature

Features are whatever the run's model takes (app/models.py): one sample's
values, flattened, must number as many as the model's input, and are reshaped to
it. Every problem raises `SiteDataError`, naming the file and what is wrong; the
data never leaves this module except as the training and validation sets.
"""

from __future__ import annotations

import csv
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_TRAIN_EXAMPLES = 10
VALIDATION_EVERY = 5  # without a val file, every 5th training sample validates
FORMATS = (".npz", ".csv")


class SiteDataError(ValueError):
    """A site's data cannot be used: `path` is the file (or folder), `problem` says why.

    The message (`str()`) holds no value from the data: it is what a failing ClientApp
    sends the server. `detail` holds what the site's operator needs to find it (the
    offending value, the folder's listing) and is only logged on the site.
    """

    def __init__(self, path: Path, problem: str, detail: str = "") -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem, self.detail = path, problem, detail


@dataclass(frozen=True)
class Table:
    """Features (n, features) as float32 and labels (n,) as int64, from one file."""

    x: np.ndarray
    y: np.ndarray
    path: Path


@dataclass(frozen=True)
class SiteData:
    train: Table
    validation: Table  # from the val file, or held out of train


def load_site(folder: Path, features: int | None = None, num_classes: int | None = None,
              label_column: str = "label") -> SiteData:
    """Read and check a site folder. `features`/`num_classes`: what the model takes
    (None: not checked, as at a SuperNode's start, before any run names a model)."""
    train_path, val_path = find_files(Path(folder))
    train = check(read_table(train_path, label_column), features, num_classes)
    if len(train.y) < MIN_TRAIN_EXAMPLES:
        raise SiteDataError(train_path, f"{len(train.y)} training samples; at least {MIN_TRAIN_EXAMPLES} are needed")
    if val_path is None:
        return SiteData(*_hold_out(train))
    validation = check(read_table(val_path, label_column), features, num_classes)
    if validation.x.shape[1] != train.x.shape[1]:
        raise SiteDataError(val_path, f"{validation.x.shape[1]} features per sample, but {train_path.name} "
                                      f"has {train.x.shape[1]}")
    return SiteData(train, validation)


def find_files(folder: Path) -> tuple[Path, Path | None]:
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "no such folder"
        raise SiteDataError(folder, f"{problem}: mount the site's data folder there (SITE_DATA)")
    try:
        present = sorted(p.name for p in folder.iterdir())
    except PermissionError:
        raise SiteDataError(folder, "cannot list the folder (permission denied): make it readable by uid 49999")
    train, val = (_one_of(folder, present, stem) for stem in ("train", "val"))
    if train is None:
        found = ", ".join(present) if present else "nothing"
        raise SiteDataError(folder, "no train.npz or train.csv", detail=f"found: {found}")
    return train, val


def load_test_file(folder: Path, features: int, num_classes: int, label_column: str = "label") -> Table:
    """A server's own test set: test.npz or test.csv in `folder`, in a site's formats, checked alike."""
    if not folder.is_dir():
        raise SiteDataError(folder, "no such folder: mount the server's test set there (docs/app.md#the-servers-test-set)")
    path = _one_of(folder, sorted(p.name for p in folder.iterdir()), "test")
    if path is None:
        raise SiteDataError(folder, "no test.npz or test.csv")
    return check(read_table(path, label_column), features, num_classes)


def _one_of(folder: Path, present: list[str], stem: str) -> Path | None:
    names = [stem + suffix for suffix in FORMATS if stem + suffix in present]
    if len(names) > 1:
        raise SiteDataError(folder, f"both {' and '.join(names)}: keep one")
    return folder / names[0] if names else None


def read_table(path: Path, label_column: str = "label") -> Table:
    try:
        x, y = _read_npz(path) if path.suffix == ".npz" else _read_csv(path, label_column)
    except PermissionError:
        raise SiteDataError(path, "cannot read the file (permission denied): make it readable by uid 49999")
    except OSError as exc:
        raise SiteDataError(path, f"cannot read the file ({exc.strerror or exc})")
    return Table(x, y, path)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise SiteDataError(path, f"no array {' or '.join(missing)} (has: {', '.join(archive.files) or 'none'}); "
                                          "save it with np.savez(path, x=features, y=labels)")
            x, y = archive["x"], archive["y"]
    except (zipfile.BadZipFile, EOFError) as exc:
        raise SiteDataError(path, f"not a readable .npz file ({exc})")
    except ValueError as exc:
        if isinstance(exc, SiteDataError):
            raise
        raise SiteDataError(path, f"not a plain numeric .npz ({exc})")
    if not np.issubdtype(x.dtype, np.number) or x.dtype.kind == "c":
        raise SiteDataError(path, f"x holds {x.dtype}, not real numbers")
    if x.ndim < 1 or len(x) == 0:
        raise SiteDataError(path, "x holds no samples")
    if y.ndim != 1 or len(y) != len(x):
        raise SiteDataError(path, f"y has shape {y.shape}; it must be one label per sample of x ({len(x)},)")
    return x.reshape(len(x), -1), _integer_labels(y, path)


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as file:
        rows = csv.reader(file)
        header = next(rows, None)
        if not header:
            raise SiteDataError(path, "empty file: a header row and one row per sample are needed")
        if label_column not in header:
            raise SiteDataError(path, f"no label column {label_column!r} in the header: name it, or set "
                                      "LABEL_COLUMN (node config label-column)",
                                detail=f"header: {', '.join(header[:8])}{', ...' if len(header) > 8 else ''}")
        label_at = header.index(label_column)
        table = _fast_numbers(file, len(header))
        if table is None:  # something is wrong: read again, row by row, to say where
            file.seek(0)
            rows = csv.reader(file)
            next(rows)
            table = np.array([_numbers(row, header, line, path) for line, row in enumerate(rows, start=2) if row],
                             dtype=np.float64)
    if len(table) == 0:
        raise SiteDataError(path, "no samples after the header")
    labels = table[:, label_at]
    return np.delete(table, label_at, axis=1).astype(np.float32), _integer_labels(labels, path)


def _fast_numbers(file, columns: int) -> np.ndarray | None:
    """The rest of the file as numbers, by numpy's C parser (60x the csv module's
    speed: a site's data is re-read by every ClientApp); None when any row is not
    plain numbers in `columns` columns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data": the caller says so
        try:
            table = np.loadtxt(file, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError:
            return None
    return table if table.size == 0 or table.shape[1] == columns else None


def _numbers(row: list[str], header: list[str], line: int, path: Path) -> list[float]:
    if len(row) != len(header):
        raise SiteDataError(path, f"line {line} has {len(row)} values; the header names {len(header)} columns")
    try:
        return [float(cell) for cell in row]
    except ValueError:
        column = next(i for i, cell in enumerate(row) if not _is_number(cell))
        raise SiteDataError(path, f"line {line}, column {header[column]!r} is not a number",
                            detail=f"it holds {row[column][:40]!r}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _integer_labels(y: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise SiteDataError(path, f"labels are {y.dtype}, not integers")
    fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    if len(fractional):
        raise SiteDataError(path, f"labels must be whole numbers; sample {fractional[0]} is not",
                            detail=f"sample {fractional[0]} has {y[fractional[0]]!r}")
    return y.astype(np.int64)


def check(table: Table, features: int | None, num_classes: int | None) -> Table:
    x, y, path = table.x, table.y, table.path
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise SiteDataError(path, f"{len(bad)} samples have non-finite features (NaN or infinity), "
                                  f"the first is sample {bad[0]}")
    if features is not None and x.shape[1] != features:
        raise SiteDataError(path, f"{x.shape[1]} features per sample, but the model takes {features} "
                                  "(run config model / num-features)")
    negative = np.flatnonzero(y < 0)
    too_high = np.flatnonzero(y >= num_classes) if num_classes is not None else []
    for where in (negative, too_high):
        if len(where):
            top = f"0..{num_classes - 1}" if num_classes is not None else "0 and up"
            raise SiteDataError(path, f"labels must be in {top} (run config num-classes); sample {where[0]} "
                                      "is not", detail=f"sample {where[0]} has {y[where[0]]}")
    return Table(x.astype(np.float32, copy=False), y, path)


def _hold_out(train: Table) -> tuple[Table, Table]:
    is_val = np.arange(len(train.y)) % VALIDATION_EVERY == VALIDATION_EVERY - 1
    keep = ~is_val
    return (Table(train.x[keep], train.y[keep], train.path), Table(train.x[is_val], train.y[is_val], train.path))


def as_model_input(x: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Flat features reshaped to the model's input shape."""
    if x.shape[1] != math.prod(shape):
        raise SiteDataError(path, f"{x.shape[1]} features per sample, but the model takes {math.prod(shape)}")
    return x.reshape(len(x), *shape)


def fingerprint(folder: Path) -> tuple:
    """Names, sizes, modification times and permissions: what changes when someone
    edits the folder (a chmod changes no time the folder's readers see)."""
    try:
        stats = ((p.name, p.stat()) for p in Path(folder).iterdir())
        return tuple(sorted((name, st.st_size, st.st_mtime_ns, st.st_mode) for name, st in stats))
    except OSError as exc:
        return (str(exc),)
