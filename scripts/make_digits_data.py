"""Writes app/data/digits.json: scikit-learn's bundled digits as a small array file.

The ClientApp and ServerApp read it (app/task.py) instead of importing
scikit-learn, which cost 1.3 s of every process start and 40 MB of every image.
JSON because a FAB carries only text files (*.py, *.json, ...); the arrays are
uint8 (pixel values 0-16, labels 0-9), zlib-compressed, base64-encoded.

    .venv/bin/python scripts/make_digits_data.py     (needs the dev extra: scikit-learn)
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "app" / "data" / "digits.json"


def pack(array: np.ndarray) -> dict:
    raw = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(raw.shape), "dtype": "uint8",
            "zlib_base64": base64.b64encode(zlib.compress(raw.tobytes(), 9)).decode()}


def main() -> None:
    digits = load_digits()
    assert np.array_equal(digits.images, digits.images.astype(np.uint8)), "pixels are not whole numbers"
    document = {
        "source": "scikit-learn load_digits (UCI ML hand-written digits, optdigits test set, CC BY 4.0)",
        "images": pack(digits.images),
        "labels": pack(digits.target),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(document) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
