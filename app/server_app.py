"""The ServerApp: runs the rounds with the strategy named in the run config,
evaluates the global model on the server's held-out digits (unless run config
server-test-set="none"), and saves it.

A run that cannot succeed fails: no quorum of nodes within `node-wait-timeout`, a
non-finite aggregate, or no round that updated the model. It logs `run_failed`
with the reason and raises, so Flower ends the run as `finished:failed`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from app import task
from flowerdock_logging import configure_logging, get_logger
from app.quorum import QuorumGrid, RunFailed, WaitPolicy
from app.strategy import build_strategy

configure_logging()  # again here: JSON even where flowerdock_logging.pth is not installed
app = ServerApp()
log = get_logger("app.server")


def sampling(config) -> dict[str, float | int]:
    """Who takes part in a round: fractions of the nodes, or `sampled-nodes` of them.

    Either way a round needs `min-nodes` connected SuperNodes (the quorum); with
    `sampled-nodes` (a simulation of 1000 nodes, 25 per round) each round samples
    exactly that many.
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


def strategy_from(config, run_id: int):
    return build_strategy(
        str(config["strategy"]),
        run_id=run_id,
        expected_metrics={"train": task.TRAIN_METRICS, "evaluate": task.EVALUATE_METRICS},
        expected_nodes=int(config["expected-nodes"]),
        node_wait_timeout=float(config["node-wait-timeout"]),
        min_replies=int(config["min-replies"]),
        max_examples=int(config["max-examples"]),
        outlier_factor=float(config["outlier-factor"]),
        server_learning_rate=float(config["server-learning-rate"]),
        trimmed_beta=float(config["trimmed-beta"]),
        num_malicious=int(config["num-malicious"]),
        krum_select=int(config["krum-select"]),
        **sampling(config),
    )


def wait_policy(config) -> WaitPolicy:
    return WaitPolicy(min_replies=int(config["min-replies"]), round_timeout=float(config["round-timeout"]),
                      straggler_timeout=float(config["straggler-timeout"]),
                      poll_interval=float(config["poll-interval"]))


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run(grid, context)
    except (RunFailed, ValueError) as exc:  # a bad setting or a run that cannot succeed: say why, once
        log.error("run_failed", run_id=context.run_id, reason=str(exc))
        raise


def run(grid: Grid, context: Context) -> None:
    config, run_id = context.run_config, context.run_id
    strategy = strategy_from(config, run_id)
    test_set = task.load_test_set(config)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = task.build_model(config)
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy, _ = task.evaluate(net, test_set)
        log.info("global_evaluation", run_id=run_id, server_round=server_round,
                 loss=loss, accuracy=accuracy, examples=len(test_set))
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    log.info("run_started", run_id=run_id, config=dict(config))
    rounds = int(config["num-server-rounds"])
    result = strategy.start(
        grid=QuorumGrid(grid, wait_policy(config)),
        initial_arrays=ArrayRecord(task.build_model(config).state_dict()),
        num_rounds=rounds,
        timeout=float(config["round-timeout"]),
        evaluate_fn=evaluate_global if test_set is not None else None,
    )
    if strategy.rounds_aggregated == 0:
        raise RunFailed(f"none of the {rounds} rounds aggregated an update (every round was skipped: "
                        "see the round_skipped and client_round lines for why)")
    # A folder per run: runs never overwrite each other's model.
    path = Path(os.getenv("APP_OUTPUT_DIR", "outputs")) / f"run-{run_id}" / str(config["model-path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.arrays.to_torch_state_dict(), path)
    final = result.evaluate_metrics_serverapp.get(rounds)
    log.info("run_finished", run_id=run_id, model_path=str(path), rounds_aggregated=strategy.rounds_aggregated,
             accuracy=final["accuracy"] if final else None)
