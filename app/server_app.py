"""The ServerApp: runs the rounds with the strategy named in the run config,
evaluates the global model on the server's held-out digits, and saves it."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from app import task
from app.logging import configure_logging, get_logger
from app.strategy import build_strategy

configure_logging()  # again here: JSON even where flowerdock_logging.pth is not installed
app = ServerApp()
log = get_logger("app.server")


def sampling(config) -> dict[str, float | int]:
    """Who takes part in a round: fractions of the nodes, or `sampled-nodes` of them.

    Either way no round starts before `min-nodes` SuperNodes are connected; with
    `sampled-nodes` (a simulation of 1000 nodes, 25 per round) each round samples
    exactly that many from all of them.
    """
    min_nodes, sampled = int(config["min-nodes"]), int(config["sampled-nodes"])
    if sampled <= 0:
        return {"fraction_train": float(config["fraction-train"]),
                "fraction_evaluate": float(config["fraction-evaluate"]),
                "min_train_nodes": min_nodes, "min_evaluate_nodes": min_nodes, "min_available_nodes": min_nodes}
    if sampled > min_nodes:
        raise ValueError(f"sampled-nodes ({sampled}) cannot exceed min-nodes ({min_nodes})")
    fraction = sampled / min_nodes
    return {"fraction_train": fraction, "fraction_evaluate": fraction,
            "min_train_nodes": sampled, "min_evaluate_nodes": sampled, "min_available_nodes": min_nodes}


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    strategy = build_strategy(
        str(config["strategy"]),
        run_id=context.run_id,
        server_learning_rate=float(config["server-learning-rate"]),
        **sampling(config),
    )
    test_set = task.load_test_set(int(config["seed"]))

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = task.Net()
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy, _ = task.evaluate(net, test_set)
        log.info("global_evaluation", run_id=context.run_id, server_round=server_round,
                 loss=loss, accuracy=accuracy, examples=len(test_set))
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    log.info("run_started", run_id=context.run_id, config=dict(config))
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        num_rounds=int(config["num-server-rounds"]),
        timeout=float(config["round-timeout"]),
        evaluate_fn=evaluate_global,
    )
    path = Path(os.getenv("APP_OUTPUT_DIR", ".")) / str(config["model-path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.arrays.to_torch_state_dict(), path)
    final = result.evaluate_metrics_serverapp.get(int(config["num-server-rounds"]))
    log.info("run_finished", run_id=context.run_id, model_path=str(path),
             accuracy=final["accuracy"] if final else None)
