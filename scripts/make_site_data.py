"""Split a data set into site folders, one per SuperNode (one hospital, say), so a
federation can be tried where each node trains on its own local data.

Layout written under --out (site-N counts from 1):

  <out>/site-1/train.npz   x: float32 (n, features), y: int64 (n,); np.savez, no pickles
  <out>/site-1/val.npz     the site's local validation split (absent with --val-fraction 0:
                           the SuperNode then validates on every 5th training sample)
  <out>/site-2/train.csv   or CSV: header f0,f1,...,f{k-1},label; one row per sample
  <out>/site-2/val.csv

Input: by default the digits that ship with the app, only the training part (the
server's held-out test set never goes into a site); or --input, an .npz (arrays x
and y) or a .csv (a header row, the --label-column, every other column a number).
Sites are split IID or Dirichlet(alpha) non-IID with app.task.partition_indices, as
the simulation does; then each site holds out a seeded random --val-fraction.
Point a SuperNode at one with node config data-path=<out>/site-N (app/site_data.py
reads it; --input goes through the same reader, so it is checked the same way), or
run them all: SITES_DIR=$PWD/sites docker compose -f compose.yaml -f docker/compose.sites.yaml up

  python scripts/make_site_data.py --sites 3 --out sites/
  python scripts/make_site_data.py --sites 5 --out sites/ --partitioning dirichlet --alpha 0.1 --format npz,csv
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import site_data  # noqa: E402
from app.task import _train_and_test, partition_indices  # noqa: E402

FORMATS = ("npz", "csv")
Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, val_x, val_y


class InputError(ValueError):
    """Bad input or arguments: reported as one line on stderr, exit status 2."""


def digits_training_part(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The app's digits minus the server's held-out test set, flattened to (n, 64)."""
    train, _ = _train_and_test(seed)
    return train.inputs.reshape(len(train), -1), train.labels


def load_input(path: str | Path, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (n, features), y int64 (n,)) from an .npz or a .csv file.

    Read by app/site_data.py, the SuperNode's own reader, so whatever this accepts
    a node accepts too, with the same messages (line and column of a bad cell)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix not in site_data.FORMATS:
        raise InputError(f"{path}: expected a .npz or .csv file, not {path.suffix or 'no extension'!r}")
    table = site_data.check(site_data.read_table(path, label_column), features=None, num_classes=None)
    return table.x, table.y


def split_sites(
    x: np.ndarray, y: np.ndarray, sites: int, partitioning: str, alpha: float, val_fraction: float, seed: int
) -> list[Split]:
    """Partition the samples among sites, then hold out a random val_fraction of each."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    # A separate stream from partition_indices' (which seeds with `seed` itself).
    rng = np.random.default_rng((seed, 1))
    splits = []
    for indices in partition_indices(y, sites, partitioning, alpha, seed):
        order = rng.permutation(indices)
        n_val = _val_count(len(order), val_fraction)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        splits.append((x[train], y[train], x[val], y[val]))
    return splits


def _val_count(n: int, fraction: float) -> int:
    """At least one validation sample once a site has two, and always one to train on."""
    if fraction == 0 or n < 2:
        return 0
    return min(max(round(n * fraction), 1), n - 1)


def check_writable(folders: list[Path], force: bool) -> None:
    """Refuse before writing anything, so a refusal never leaves a half-written split."""
    for folder in folders:
        if folder.exists() and not force and (not folder.is_dir() or any(folder.iterdir())):
            raise InputError(f"{folder} exists and is not empty; pass --force to replace it")


def write_site(folder: Path, fmt: str, train_x, train_y, val_x, val_y) -> None:
    """Write one site folder, replacing whatever it held."""
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    folder.mkdir(parents=True)
    for name, x, y in (("train", train_x, train_y), ("val", val_x, val_y)):
        if name == "val" and len(y) == 0:
            continue
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if fmt == "npz":
            np.savez(folder / f"{name}.npz", x=x, y=y)
        else:  # %.9g: enough digits that every float32 reads back exactly
            header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
            table = np.column_stack([x.astype(np.float64), y])
            fmts = ["%.9g"] * x.shape[1] + ["%d"]
            np.savetxt(folder / f"{name}.csv", table, fmt=fmts, delimiter=",", header=header, comments="")


def summarize(folders: list[Path], formats: list[str], splits: list[Split], all_labels: np.ndarray) -> dict:
    sites = []
    for folder, fmt, (_, train_y, _, val_y) in zip(folders, formats, splits):
        counts = np.bincount(np.searchsorted(all_labels, np.concatenate([train_y, val_y])), minlength=len(all_labels))
        labels = {str(label): int(count) for label, count in zip(all_labels, counts)}
        sites.append({"site": folder.name, "path": str(folder), "format": fmt,
                      "train": len(train_y), "val": len(val_y), "labels": labels})
    return {"sites": sites}


def format_table(summary: dict) -> str:
    sites = summary["sites"]
    labels = list(sites[0]["labels"])
    rows = [["site", "format", "train", "val", *labels]]
    rows += [[s["site"], s["format"], s["train"], s["val"], *s["labels"].values()] for s in sites]
    rows.append(["total", "", *(sum(row[i] for row in rows[1:]) for i in range(2, len(rows[0])))])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    # Names flush left, numbers flush right, so the counts line up by digit.
    return "\n".join(
        "  ".join(str(cell).ljust(w) if i < 2 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    )


def _formats(text: str) -> list[str]:
    formats = [part.strip() for part in text.split(",")]
    if not formats or any(fmt not in FORMATS for fmt in formats):
        raise argparse.ArgumentTypeError(f"expected npz, csv or a comma list of them, got {text!r}")
    return formats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, required=True, help="number of site folders (SuperNodes)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write site-1, site-2, ... into")
    parser.add_argument("--partitioning", choices=("iid", "dirichlet"), default="iid", help="default: iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration; smaller is more skewed (default: 0.5)")
    parser.add_argument("--format", type=_formats, default=["npz"],
                        help="npz or csv, or a comma list given to the sites in turn, e.g. npz,csv (default: npz)")
    parser.add_argument("--input", type=Path, help=".npz (arrays x, y) or .csv; default: the app's digits, minus the server's test set")
    parser.add_argument("--label-column", default="label", help="the label column of a CSV --input (default: label)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each site held out as val (default: 0.2; 0: no val file)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split, and of the digits' test hold-out (default: 42)")
    parser.add_argument("--force", action="store_true", help="replace existing non-empty site folders")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        x, y = load_input(args.input, args.label_column) if args.input else digits_training_part(args.seed)
        splits = split_sites(x, y, args.sites, args.partitioning, args.alpha, args.val_fraction, args.seed)
        folders = [args.out / f"site-{i}" for i in range(1, len(splits) + 1)]
        formats = [args.format[i % len(args.format)] for i in range(len(splits))]
        check_writable(folders, args.force)
        for folder, fmt, split in zip(folders, formats, splits):
            write_site(folder, fmt, *split)
    except ValueError as error:  # InputError, or partition_indices refusing its arguments
        detail = getattr(error, "detail", "")  # a SiteDataError's offending value: this is the data's owner
        print(f"make_site_data: error: {error}{f' ({detail})' if detail else ''}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"make_site_data: error: {error}", file=sys.stderr)
        return 1
    for folder, (_, train_y, _, _) in zip(folders, splits):
        if len(train_y) < site_data.MIN_TRAIN_EXAMPLES:  # a SuperNode refuses such a folder (app/site_data.py)
            print(f"make_site_data: warning: {folder} has {len(train_y)} training samples; a SuperNode needs "
                  f"at least {site_data.MIN_TRAIN_EXAMPLES} (fewer --sites, or a larger --alpha)", file=sys.stderr)
    # A wider earlier split leaves site-(N+1)... behind; a node pointed there would train on stale data.
    leftover = sorted(set(args.out.glob("site-*")) - set(folders))
    if leftover:
        print(f"make_site_data: note: {args.out} also holds {', '.join(p.name for p in leftover)}, not part of this split",
              file=sys.stderr)
    summary = summarize(folders, formats, splits, np.unique(y))
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
