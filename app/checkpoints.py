"""The global model on the server's disk: where a run starts from, and what it leaves behind.

Every run has a folder, `$APP_OUTPUT_DIR/run-<run id>/` (the serverapp container's outputs
volume). After each round the global model is written there as `checkpoint.pt`, replaced whole,
never half-written; at the end, `final_model.pt` (run config `model-path`). A run that dies
mid-way (a lost host, a deadline) leaves the model of its last round.

Run config `initial-model` starts a run from a saved model instead of a fresh one: a checkpoint
to resume from, a previous run's final model, or pretrained weights the server's operator put
in the outputs volume. It is a path under `$APP_OUTPUT_DIR` (a run's submitter names it; the
server reads nothing outside that folder), read with torch's weights-only loader (no pickled
code runs), and it must fit the run's model exactly: the same arrays, the same shapes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from flwr.app import ArrayRecord

from app import task
from flowerdock_logging import get_logger

CHECKPOINT = "checkpoint.pt"
log = get_logger("app.checkpoints")


def outputs() -> Path:
    return Path(os.getenv("APP_OUTPUT_DIR", "outputs"))


def run_folder(run_id: int) -> Path:
    """The run's own folder: runs never overwrite each other's models."""
    return outputs() / f"run-{run_id}"


def save(arrays: ArrayRecord, path: Path) -> Path:
    """Write the model's state dict to `path`, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(arrays.to_torch_state_dict(), partial)
    os.replace(partial, path)
    return path


def save_checkpoint(run_id: int, server_round: int, arrays: ArrayRecord) -> None:
    path = save(arrays, run_folder(run_id) / CHECKPOINT)
    log.info("checkpoint_saved", run_id=run_id, server_round=server_round, path=str(path))


def initial_arrays(config: Mapping[str, Any], run_id: int) -> ArrayRecord:
    """The model the run starts from: a fresh one (seeded), or run config `initial-model`'s."""
    torch.manual_seed(int(config["seed"]))  # the same starting model for the same seed: runs compare
    net = task.build_model(config)
    if not (name := str(config["initial-model"])):
        return ArrayRecord(net.state_dict())
    path = _under_outputs(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear refusal
        raise ValueError(f"initial-model {name!r}: {path} is not a saved model that torch's weights-only loader "
                         f"reads ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        net.load_state_dict(state)  # strict: the same arrays, the same shapes
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ValueError(f"initial-model {name!r} does not fit the run's model (model={config['model']}): "
                         f"{first}") from None
    log.info("initial_model_loaded", run_id=run_id, path=str(path))
    return ArrayRecord(net.state_dict())


def _under_outputs(name: str) -> Path:
    root = outputs().resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"initial-model {name!r}: must be a path under the outputs folder ({root}), "
                         "such as run-<run id>/checkpoint.pt")
    if not path.is_file():
        raise ValueError(f"initial-model {name!r}: no file {path} (put the model in the serverapp's outputs "
                         "volume; a run's own are run-<run id>/checkpoint.pt and run-<run id>/final_model.pt)")
    return path
