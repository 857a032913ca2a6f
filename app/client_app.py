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
from flowerdock_logging import configure_logging, get_logger
from app.metadata import to_config_record
from app.site_data import SiteDataError

configure_logging()  # again here: JSON even where flowerdock_logging.pth is not installed
app = ClientApp()
log = get_logger("app.client")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model locally."""
    config = context.run_config
    net = _received_model(msg, context)
    trainset, valset = _local_data(context)
    # One exchange a round: the received model's validation metrics ride on the train reply,
    # measured before training changes it (so they are the previous round's model's).
    received = _evaluation_metrics(net, valset, context) if config["one-exchange"] else {}
    loss, meta = task.train(
        net,
        trainset,
        epochs=int(config["local-epochs"]),
        lr=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        tolerance=float(config["convergence-tolerance"]),
        seed=int(config["seed"]) + int(msg.content["config"]["server-round"]),
    )
    if context.node_config.get("share-label-counts") is True:  # the site's operator opted in
        meta = dataclasses.replace(meta, label_counts=task.label_counts(trainset))
    meta = dataclasses.replace(meta, device=str(task.DEVICE), **_ray_node())  # a CPU fallback shows
    record_name, record = to_config_record(meta)
    log.info("local_train_done", run_id=context.run_id, examples=len(trainset), train_loss=loss,
             training_time=meta.training_time, converged=meta.converged, device=str(task.DEVICE))
    content = RecordDict(
        {
            "arrays": ArrayRecord(net.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, **received, "num-examples": len(trainset)}),
            record_name: record,
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on the local validation split."""
    net = _received_model(msg, context)
    _, valset = _local_data(context)
    loss, accuracy, meta = task.evaluate(net, valset)
    record_name, record = to_config_record(dataclasses.replace(meta, **_ray_node()))
    log.info("local_evaluate_done", run_id=context.run_id, examples=len(valset), eval_loss=loss, eval_acc=accuracy)
    content = RecordDict(
        {
            "metrics": MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(valset)}),
            record_name: record,
        }
    )
    return Message(content=content, reply_to=msg)


def _evaluation_metrics(net, valset: task.Split, context: Context) -> dict[str, float]:
    """The received model on the validation split, as the evaluate phase would report it."""
    loss, accuracy, _ = task.evaluate(net, valset)
    log.info("local_evaluate_done", run_id=context.run_id, examples=len(valset), eval_loss=loss, eval_acc=accuracy,
             before_training=True)
    return {"eval_loss": loss, "eval_acc": accuracy}


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
