"""The ServerApp: runs the rounds with the strategy named in the run config,
evaluates the global model on the server's held-out digits (unless run config
server-test-set="none"), and saves it.

A run that cannot succeed, or did not, fails: no quorum of nodes within
`node-wait-timeout`, a non-finite aggregate, no round that updated the model, most
rounds rejected by the model guard, or a final model less accurate on the server's
test set than the starting one. It logs `run_failed` with the reason and raises, so
Flower ends the run as `finished:failed` (and `submit`, `make federation` exit 1).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from app import checkpoints, task
from flowerdock_logging import configure_logging, flower_internals, get_logger
from app.model_guard import ModelGuard, Score
from app.quorum import QuorumGrid, RunFailed, WaitPolicy
from app.aggregators import build_strategy
from app.instructions import Pacer, baseline

configure_logging()  # again here: JSON even where flowerdock_logging.pth is not installed
flower_internals.require("app/")  # a Flower that moved what app/ relies on fails the ServerApp's load, saying what
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


def strategy_from(config, run_id: int, guard: ModelGuard | None = None):
    return build_strategy(
        str(config["strategy"]),
        run_id=run_id,
        expected_metrics=expected_metrics(config),
        expected_nodes=int(config["expected-nodes"]),
        node_wait_timeout=float(config["node-wait-timeout"]),
        min_replies=int(config["min-replies"]),
        max_examples=int(config["max-examples"]),
        outlier_factor=float(config["outlier-factor"]),
        min_cosine=float(config["min-cosine"]),
        clip_factor=float(config["clip-factor"]),
        exclude_after=int(config["exclude-after"]),
        guard=guard,
        server_learning_rate=float(config["server-learning-rate"]),
        trimmed_beta=float(config["trimmed-beta"]),
        num_malicious=int(config["num-malicious"]),
        krum_select=int(config["krum-select"]),
        one_exchange=bool(config["one-exchange"]),
        pacer=Pacer(baseline(config), float(config["pace-factor"])),
        **sampling(config),
    )


def expected_metrics(config) -> dict[str, tuple[str, ...]]:
    """The metrics each phase's replies must carry: with one exchange a round, a train reply
    also carries the evaluation of the model it received."""
    train = task.TRAIN_METRICS + (task.EVALUATE_METRICS if config["one-exchange"] else ())
    return {"train": train, "evaluate": task.EVALUATE_METRICS}


def wait_policy(config) -> WaitPolicy:
    return WaitPolicy(min_replies=int(config["min-replies"]), round_timeout=float(config["round-timeout"]),
                      straggler_timeout=float(config["straggler-timeout"]),
                      poll_interval=float(config["poll-interval"]))


def check_outcome(result, rounds: int, aggregated: int, rejected: int, majority: float | None = None) -> None:
    """Raise `RunFailed` for a run that must not be called completed.

    `majority`: the accuracy of always answering the test set's most common label; a final
    model no better than that has learned nothing, whatever it started from."""
    if rejected > rounds / 2:
        raise RunFailed(f"the model guard rejected {rejected} of {rounds} rounds' aggregates (round_rejected "
                        "lines name the updates that pulled furthest): the federation did not train the model")
    if aggregated == 0:
        raise RunFailed(f"none of the {rounds} rounds aggregated an update (every round was skipped: "
                        "see the round_skipped and client_round lines for why)")
    start, final = (result.evaluate_metrics_serverapp.get(r) for r in (0, rounds))
    if start is not None and final is not None and final["accuracy"] < start["accuracy"]:
        raise RunFailed(f"the final model's accuracy on the server's test set, {final['accuracy']:.4f}, is below "
                        f"the starting model's {start['accuracy']:.4f}: the run made the model worse")
    if majority is not None and final is not None and final["accuracy"] <= majority:
        raise RunFailed(f"the final model's accuracy on the server's test set, {final['accuracy']:.4f}, is no better "
                        f"than always answering its most common label ({majority:.4f}): the model learned nothing")


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run(grid, context)
    except (RunFailed, ValueError) as exc:  # a bad setting or a run that cannot succeed: say why, once
        log.error("run_failed", run_id=context.run_id, reason=str(exc))
        raise


def run(grid: Grid, context: Context) -> None:
    config, run_id = context.run_config, context.run_id
    test_set = task.load_test_set(config)

    def score(arrays: ArrayRecord) -> Score:
        net = task.build_model(config)
        net.load_state_dict(arrays.to_torch_state_dict())
        metrics, _ = task.evaluate(net, test_set)
        return Score(metrics["eval_loss"], metrics["eval_acc"])

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower calls this with the global model, before round 1 and after each round."""
        if server_round > 0:
            checkpoints.save_checkpoint(run_id, server_round, arrays)
        return evaluate_global(server_round, arrays) if test_set is not None else None

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        result = guard.score(arrays)  # scored once, whether the guard or this asks first
        log.info("global_evaluation", run_id=run_id, server_round=server_round,
                 loss=result.loss, accuracy=result.accuracy, examples=len(test_set))
        return MetricRecord({"loss": result.loss, "accuracy": result.accuracy})

    guard = ModelGuard(run_id, score if test_set is not None else None, float(config["guard-tolerance"]))
    strategy = strategy_from(config, run_id, guard)

    log.info("run_started", run_id=run_id, config=dict(config))
    guard.announce()
    rounds = int(config["num-server-rounds"])
    result = strategy.start(
        grid=QuorumGrid(grid, wait_policy(config)),
        initial_arrays=checkpoints.initial_arrays(config, run_id),
        num_rounds=rounds,
        timeout=float(config["round-timeout"]),
        evaluate_fn=after_round,
    )
    strategy.records.log_records()
    majority = float(np.bincount(test_set.labels).max() / len(test_set)) if test_set is not None else None
    check_outcome(result, rounds, strategy.rounds_aggregated, guard.rounds_rejected, majority)
    path = checkpoints.save(result.arrays, checkpoints.run_folder(run_id) / str(config["model-path"]))
    final = result.evaluate_metrics_serverapp.get(rounds)
    log.info("run_finished", run_id=run_id, model_path=str(path), rounds_aggregated=strategy.rounds_aggregated,
             accuracy=final["accuracy"] if final else None)
