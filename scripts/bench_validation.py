"""Benchmark: which machinery should check a decoded payload? Ours against msgspec and pydantic.

Every contender reads the same CBOR bytes through the same safe parse (flowerdock.cbor_wire:
size cap, depth cap, tags refused); they differ only in what checks the parsed map against the
schema. pickle.loads and cbor2.loads, which check nothing, are the floor. msgspec is not a
dependency of this project: install it apart and put it on the path for one run, e.g.

    python3 -m pip install --target /tmp/bench-deps msgspec==0.23.0
    PYTHONPATH=/tmp/bench-deps .venv/bin/python scripts/bench_validation.py

(pydantic is already installed here, as a dependency of Flower's.) A contender that is missing
is reported as such; the others still run. Called by scripts/bench_metadata.py (`make bench`).
"""

# No `from __future__ import annotations`: msgspec and pydantic read the local classes' hints at run time.

import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from app.metadata import (  # noqa: E402
    MAX_DEPTH, MAX_EPOCHS, MAX_LABEL_COUNT, MAX_LABELS, MAX_SECONDS, TrainProcessMetadata)
from flowerdock import decode, encode  # noqa: E402
from flowerdock.cbor_wire import parse  # noqa: E402
from flowerdock.messages import _build, spec_of  # noqa: E402

# What the other libraries can say of a key: 1-64 characters, no control character. Not quite
# str.isprintable() (which also refuses unassigned and separator code points): neither library
# can call it, so theirs is the looser rule, and each would still need a check of its own for
# the Ray node's IP address and for the cross-field rule (both or neither).
KEY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,64}$"
RAY_ID_PATTERN = r"^[0-9a-f]{1,64}$"


def msgspec_checker() -> Callable[[dict[str, Any]], Any] | str:
    try:
        import msgspec
    except ImportError:
        return "not installed (see this script's docstring)"
    from msgspec import Meta

    key = Annotated[str, Meta(pattern=KEY_PATTERN)]
    count = Annotated[int, Meta(ge=0, le=MAX_LABEL_COUNT)]

    class Train(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        kind: Literal["train"]
        version: int
        training_time: Annotated[float, Meta(ge=0, le=MAX_SECONDS)]
        converged: bool
        training_losses: Annotated[dict[key, float], Meta(max_length=MAX_EPOCHS)]
        label_counts: Annotated[dict[key, count], Meta(max_length=MAX_LABELS)] | None = None
        ray_node_id: Annotated[str, Meta(pattern=RAY_ID_PATTERN)] | None = None
        ray_node_ip: Annotated[str, Meta(max_length=45)] | None = None

    def check(payload: dict[str, Any]) -> Any:
        meta = msgspec.convert(payload, Train, strict=True)
        # msgspec has no finiteness constraint for a float: a NaN loss needs a pass of our own.
        if not all(value == value and abs(value) != float("inf") for value in meta.training_losses.values()):
            raise ValueError("training_losses must be finite")
        return meta

    return check


def pydantic_checker() -> Callable[[dict[str, Any]], Any] | str:
    try:
        from pydantic import BaseModel, ConfigDict, Field, StringConstraints
    except ImportError:
        return "not installed"

    key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
    finite = Annotated[float, Field(allow_inf_nan=False)]

    class Train(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
        kind: Literal["train"]
        version: int
        training_time: Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
        converged: bool
        training_losses: Annotated[dict[key, finite], Field(max_length=MAX_EPOCHS)]
        label_counts: Annotated[dict[key, Annotated[int, Field(ge=0, le=MAX_LABEL_COUNT)]],
                                Field(max_length=MAX_LABELS)] | None = None
        ray_node_id: Annotated[str, StringConstraints(pattern=RAY_ID_PATTERN)] | None = None
        ray_node_ip: Annotated[str, StringConstraints(max_length=45)] | None = None

    return Train.model_validate


def cases() -> dict[str, TrainProcessMetadata]:
    ray = {"ray_node_id": "3c5a9d0e8f1b2a4c6d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e", "ray_node_ip": "10.213.47.5"}
    return {
        "typical: 6 fields, 5 epochs, 10 labels": TrainProcessMetadata(
            12.5, True, {f"epoch_{i}": 1.0 / i for i in range(1, 6)}, {str(i): 100 + i for i in range(10)}, **ray),
        "1,000 epochs (the cap)": TrainProcessMetadata(
            12.5, False, {f"epoch_{i}": 1.0 / i for i in range(1, MAX_EPOCHS + 1)}),
        "1,000 label counts (the cap)": TrainProcessMetadata(
            12.5, False, {"epoch_1": 0.5}, {f"label_{i}": i for i in range(MAX_LABELS)}),
    }


def validation_table(per_call: Callable[[Callable[[], Any]], float]) -> None:
    checkers = {"msgspec.convert": msgspec_checker(), "pydantic (strict)": pydantic_checker()}
    print("\nvalidation machinery: the same bytes, the same safe parse, then each checker (us per decode)")
    print("  (neither library checks the IP address, str.isprintable() or `together`: ours does, in its figure)")
    for name, checker in checkers.items():
        if isinstance(checker, str):
            print(f"  {name}: {checker}")
    available = {name: checker for name, checker in checkers.items() if not isinstance(checker, str)}
    for label, meta in cases().items():
        data = encode(meta)
        parsed = parse(data, MAX_DEPTH)
        pickled = pickle.dumps(meta)
        rows = {"pickle.loads (unsafe)": lambda: pickle.loads(pickled),
                "cbor2.loads (unchecked)": lambda: cbor2.loads(data),
                "safe parse alone": lambda: parse(data, MAX_DEPTH),
                "flowerdock.decode": lambda: decode(data, TrainProcessMetadata)}
        checks = {"flowerdock": lambda: _ours_checks_only(parsed)}
        for name, checker in available.items():
            checker(parsed)  # it accepts what ours accepts
            rows[f"safe parse + {name}"] = lambda c=checker: c(parse(data, MAX_DEPTH))
            checks[name] = lambda c=checker: c(parsed)
        floor = per_call(rows["pickle.loads (unsafe)"])
        print(f"\n  {label}: {len(data)} bytes")
        print(f"    {'decode':<38}{'us':>9}{'/ pickle':>10}")
        for name, fn in {**rows, **{f"checks alone: {n}": fn for n, fn in checks.items()}}.items():
            seconds = per_call(fn)
            print(f"    {name:<38}{seconds * 1e6:>9.2f}{seconds / floor:>9.2f}x")


def _ours_checks_only(parsed: dict[str, Any]) -> Any:
    """flowerdock's checks on an already parsed map: what decode does after the parse."""
    spec = spec_of(TrainProcessMetadata)
    spec.layouts[parsed["version"]].key_error(parsed.keys())
    return _build(spec, parsed)


if __name__ == "__main__":
    from scripts.bench_metadata import per_call
    validation_table(per_call)
