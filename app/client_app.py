"""The ClientApp: trains and evaluates the global model on this SuperNode's data (its
own folder, or its partition of the bundled digits), and reports how it went as
CBOR metadata next to the usual records.

Data that cannot be used (app/site_data.py) raises; Flower then replies with an
error that carries the message (never a value from the data), and the server logs
it for this node and round."""

from __future__ import annotations

import dataclasses
import sys

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from app import task
from app.instructions import TrainInstruction
from app.metadata import to_config_record
from app.site_data import SiteDataError
from flowerdock import MessageError, from_content
from flowerdock_logging import configure_logging, get_logger

configure_logging()  # again here: JSON even where flowerdock_logging.pth is not installed
app = ClientApp()
log = get_logger("app.client")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model locally, as the strategy's instruction says."""
    instruction = _instruction(msg, context)
    config = {**context.run_config, **instruction.settings()}
    net = _received_model(msg, context)
    trainset, valset = _local_data(context)
    # One exchange a round: the received model's validation metrics ride on the train reply,
    # measured before training changes it (so they are the previous round's model's).
    received = _evaluation_metrics(net, valset, context) if config["one-exchange"] else {}
    metrics, meta = task.train(net, trainset, config,
                               seed=int(config["seed"]) + int(msg.content["config"]["server-round"]))
    if context.node_config.get("share-label-counts") is True:  # the site's operator opted in
        meta = dataclasses.replace(meta, label_counts=task.label_counts(trainset))
    meta = dataclasses.replace(meta, device=str(task.DEVICE), **_ray_node())  # a CPU fallback shows
    record_name, record = to_config_record(meta)
    log.info("local_train_done", run_id=context.run_id, examples=len(trainset), **metrics,
             training_time=meta.training_time, converged=meta.converged, device=str(task.DEVICE),
             instruction=dataclasses.asdict(instruction))
    content = RecordDict(
        {
            "arrays": ArrayRecord(net.state_dict()),
            "metrics": MetricRecord({**_declared(metrics, task.TRAIN_METRICS), **received, "num-examples": len(trainset)}),
            record_name: record,
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on the local validation split."""
    net = _received_model(msg, context)
    _, valset = _local_data(context)
    metrics, meta = task.evaluate(net, valset)
    record_name, record = to_config_record(dataclasses.replace(meta, **_ray_node()))
    log.info("local_evaluate_done", run_id=context.run_id, examples=len(valset), **metrics)
    content = RecordDict(
        {
            "metrics": MetricRecord({**_declared(metrics, task.EVALUATE_METRICS), "num-examples": len(valset)}),
            record_name: record,
        }
    )
    return Message(content=content, reply_to=msg)


def _evaluation_metrics(net, valset: task.Split, context: Context) -> dict[str, float]:
    """The received model on the validation split, as the evaluate phase would report it."""
    metrics, _ = task.evaluate(net, valset)
    log.info("local_evaluate_done", run_id=context.run_id, examples=len(valset), **metrics, before_training=True)
    return _declared(metrics, task.EVALUATE_METRICS)


def _instruction(msg: Message, context: Context) -> TrainInstruction:
    """The strategy's instruction for this node, decoded as untrusted (the SuperLink relays it):
    a bad one fails this reply, saying which field and why."""
    try:
        return from_content(msg.content, TrainInstruction)
    except MessageError as exc:
        log.error("train_instruction_invalid", run_id=context.run_id, error=str(exc))
        raise


def _declared(metrics: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """`metrics` if its names are the declared ones (app/task.py); the server rejects any other."""
    if set(metrics) != set(names):
        raise ValueError(f"app/task.py returned metrics {sorted(metrics)}, but declares {sorted(names)}: "
                         "make TRAIN_METRICS / EVALUATE_METRICS name what train / evaluate return")
    return metrics


def _ray_node() -> dict[str, str]:
    """In Flower's simulation runtime, the Ray node this ClientApp runs on (the reply's
    metadata carries it to the ServerApp's client_round line); elsewhere nothing, so a
    deployment's replies stay as they were. Ray is never imported here: in a Ray worker
    it is imported already."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    return {"ray_node_id": ray.get_runtime_context().get_node_id(), "ray_node_ip": ray.util.get_node_ip_address()}


def _received_model(msg: Message, context: Context):
    net = task.build_model(context.run_config)
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return net


def _local_data(context: Context) -> tuple[task.Split, task.Split]:
    try:
        return task.load_local_data(context.node_config, context.run_config)
    except SiteDataError as exc:  # the detail (a value from the data) stays in this site's log
        log.error("site_data_invalid", run_id=context.run_id, path=str(exc.path), problem=exc.problem,
                  detail=exc.detail)
        raise
