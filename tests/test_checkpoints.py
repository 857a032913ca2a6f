"""The global model on the server's disk (app/checkpoints.py): a checkpoint after every round, and
run config `initial-model` to start a run from a saved model (resume, or pretrained weights)."""

from __future__ import annotations

import sys

import pytest
import torch
from flwr.app import ArrayRecord

from app import checkpoints, task
from app.run_config import defaults
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import direct_federation  # noqa: E402


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_OUTPUT_DIR", str(tmp_path))
    return tmp_path


def config(**overrides):
    return {**defaults(), **overrides}


def test_a_fresh_start_is_the_seeds_model(outputs):
    a, b = (checkpoints.initial_arrays(config(), run_id=1) for _ in range(2))
    other = checkpoints.initial_arrays(config(seed=7), run_id=1)
    assert all((a[k].numpy() == b[k].numpy()).all() for k in a)
    assert not all((a[k].numpy() == other[k].numpy()).all() for k in a)


def test_a_saved_model_is_where_the_run_starts(outputs):
    trained = task.build_model(config())
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    checkpoints.save(ArrayRecord(trained.state_dict()), outputs / "pretrained" / "digits.pt")
    arrays = checkpoints.initial_arrays(config(**{"initial-model": "pretrained/digits.pt"}), run_id=2)
    for name, value in trained.state_dict().items():
        assert torch.equal(torch.from_numpy(arrays[name].numpy()), value)


@pytest.mark.parametrize("name, says", [
    ("nowhere.pt", "no file"),
    ("../outside.pt", "must be a path under the outputs folder"),
    ("/etc/passwd", "must be a path under the outputs folder"),
    ("garbage.pt", "weights-only loader"),
    ("mlp.pt", "does not fit the run's model (model=cnn)"),
    ("code.pt", "weights-only loader"),
])
def test_a_model_that_cannot_start_the_run_is_refused_saying_why(outputs, name, says):
    (outputs / "garbage.pt").write_bytes(b"not a model")
    checkpoints.save(ArrayRecord(task.build_model(config(model="mlp")).state_dict()), outputs / "mlp.pt")

    class Payload:  # pickled code: the weights-only loader must not run it
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))

    torch.save({"x": Payload()}, outputs / "code.pt")
    (outputs.parent / "outside.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        checkpoints.initial_arrays(config(**{"initial-model": name}), run_id=3)


def test_every_round_leaves_a_checkpoint_and_a_run_resumes_from_it(outputs):
    first, failure = direct_federation.run({"num-server-rounds": 2, "min-nodes": 3, "local-epochs": 1}, nodes=3)
    assert failure is None, failure
    saved = [e for e in first if e.get("event") == "checkpoint_saved"]
    assert [e["server_round"] for e in saved] == [1, 2]
    checkpoint = outputs / "run-1" / checkpoints.CHECKPOINT
    assert checkpoint.is_file() and not list(outputs.glob("run-1/.*partial"))
    final = torch.load(outputs / "run-1" / "final_model.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in torch.load(checkpoint, weights_only=True).items())

    (outputs / "resume").mkdir()
    checkpoint.rename(outputs / "resume" / "run-1.pt")  # the next run (also run 1 here) writes its own
    second, failure = direct_federation.run({"num-server-rounds": 1, "min-nodes": 3, "local-epochs": 1,
                                             "initial-model": "resume/run-1.pt"}, nodes=3)
    assert failure is None, failure
    assert [e["path"] for e in second if e.get("event") == "initial_model_loaded"] == [str(outputs / "resume/run-1.pt")]
    start = [e["accuracy"] for e in second if e.get("event") == "global_evaluation" and e["server_round"] == 0]
    assert start == [direct_federation.accuracy(first)]  # it starts where the first run ended
