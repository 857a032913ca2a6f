"""What a ClientApp reports about its training, declared once on the flowerdock layer.

The Flower tutorial sends this object with `pickle`, which runs arbitrary code on
load. Here the bytes come from other organisations' machines, so the layer
(flowerdock/) treats every payload as hostile: it caps the size before decoding and
the nesting depth while decoding, refuses every CBOR semantic tag, and checks each
field against the declaration below: exact names and types, finite numbers, sane
sizes, and a schema version so that a newer server can still read an older client.

Version 2 adds `label_counts` to train metadata: privacy-sensitive, sent only when a
site's operator opts in (node config `share-label-counts`). Without it, metadata is
still written as version 1, byte for byte, so v1-only servers keep reading those sites.

Version 3 adds `ray_node_id` and `ray_node_ip` to both kinds: which Ray node ran the
ClientApp, written only in Flower's simulation runtime (Ray), where server and clients
are one run's code. A deployment's replies carry neither and stay version 1 or 2, byte
for byte. In version 3, `label_counts` is optional: a version-3 reply holds it only
when the site opted in.

Version 4 adds `device` to train metadata: the torch device that trained (`cpu`, `cuda`,
`cuda:1`), so that a GPU site whose container fell back to the CPU shows in its client_round
line. A reply that names no device stays what versions 1-3 wrote, byte for byte.

Public API: `encode(meta) -> bytes`, `decode(data, kind) -> meta`, `MetadataError`,
and `to_config_record` / `from_content` for carrying it in a Message.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, TypeVar

from flwr.app import ConfigRecord, RecordDict

import flowerdock
from flowerdock import Key, MessageError, Range, Size, Text, Version, message

__all__ = ["EvaluateProcessMetadata", "MetadataError", "SCHEMA_VERSION", "TrainProcessMetadata", "decode", "encode",
           "from_content", "to_config_record"]

# The newest version written. A change of fields is a new Version in the declarations
# below; older versions stay readable without any code of their own.
SCHEMA_VERSION = 4

# Limits. A legitimate payload is a few hundred bytes; these leave ample room
# while bounding the work an attacker can cause.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 3  # the payload map, and one map inside it (training_losses, label_counts), and one spare
MAX_EPOCHS = 1_000  # entries in training_losses
MAX_LABELS = 1_000  # entries in label_counts
MAX_LABEL_COUNT = 10**9  # examples of one label at one site
MAX_KEY_CHARS = 64
MAX_SECONDS = 7 * 24 * 3600.0  # a week: longer than any round timeout
MAX_RAY_NODE_ID_CHARS = 64  # Ray's node IDs: 28 bytes, 56 hex digits
MAX_IP_CHARS = 45  # the longest IPv6 text form
MAX_DEVICE_CHARS = 16  # a torch device: "cpu", "cuda:15", "mps"

MetadataError = MessageError  # one exception type: the layer's


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


Seconds = Annotated[float, Range(0, MAX_SECONDS, unit="seconds")]
Losses = Annotated[dict[Key, float], Size(max=MAX_EPOCHS)]
LabelCounts = Annotated[dict[Key, Annotated[int, Range(0, MAX_LABEL_COUNT)]], Size(max=MAX_LABELS)]
RayNodeId = Annotated[str, Text(max=MAX_RAY_NODE_ID_CHARS, pattern=rf"[0-9a-f]{{1,{MAX_RAY_NODE_ID_CHARS}}}",
                                says=f"1-{MAX_RAY_NODE_ID_CHARS} lowercase hex digits")]
RayNodeIp = Annotated[str, Text(max=MAX_IP_CHARS, check=is_ip_address, says="an IPv4 or IPv6 address")]
Device = Annotated[str, Text(max=MAX_DEVICE_CHARS, pattern=r"[a-z]{2,8}(:[0-9]{1,3})?",
                             says="a torch device such as cpu, cuda or cuda:1")]
RAY_NODE = ("ray_node_id", "ray_node_ip")  # both or neither
# Version 3: both kinds gain the Ray node, required in it.
WITH_RAY_NODE = Version(3, adds=RAY_NODE, required=RAY_NODE)


@message(kind="train", record="train_metadata", together=[RAY_NODE], max_bytes=MAX_PAYLOAD_BYTES,
         max_depth=MAX_DEPTH, versions=[
             Version(1),
             Version(2, adds=["label_counts"], required=["label_counts"]),
             WITH_RAY_NODE,  # label_counts becomes optional: sent only where the site opted in
             Version(4, adds=["device"], required=["device"]),
         ])
class TrainProcessMetadata:
    """How a ClientApp's local training went."""

    training_time: Seconds
    converged: bool
    # e.g. {"epoch_1": 0.56, "epoch_2": 0.34}; a NaN or infinite loss means training diverged:
    # such an update must not be averaged into the global model, so it is refused.
    training_losses: Losses
    # Training examples per label name, e.g. {"0": 512, "malignant": 40}: opt-in, else None. Set: version 2.
    label_counts: LabelCounts | None = None
    # The Ray node that ran the ClientApp (simulation runtime only), else None. Set: version 3.
    ray_node_id: RayNodeId | None = None
    ray_node_ip: RayNodeIp | None = None
    # The torch device that trained (the ClientApp sets it), else None. Set: version 4.
    device: Device | None = None

    KIND = "train"


@message(kind="evaluate", record="evaluate_metadata", together=[RAY_NODE], max_bytes=MAX_PAYLOAD_BYTES,
         max_depth=MAX_DEPTH, versions=[
             Version(1),
             Version(2),  # evaluate did not change; a version names the whole schema
             WITH_RAY_NODE,
         ])
class EvaluateProcessMetadata:
    """How a ClientApp's local evaluation went."""

    evaluation_time: Seconds
    # The Ray node that ran the ClientApp (simulation runtime only), else None. Set: version 3.
    ray_node_id: RayNodeId | None = None
    ray_node_ip: RayNodeIp | None = None

    KIND = "evaluate"


Metadata = TrainProcessMetadata | EvaluateProcessMetadata
M = TypeVar("M", TrainProcessMetadata, EvaluateProcessMetadata)
RECORD_NAMES = {kind: flowerdock.record_name(kind) for kind in (TrainProcessMetadata, EvaluateProcessMetadata)}
# The versions this reader reads (a test narrows it to play an older server).
_READERS = {1: "the tutorial's fields", 2: "+ label_counts (train)", 3: "+ ray_node_id, ray_node_ip",
            4: "+ device (train)"}


def encode(meta: Metadata) -> bytes:
    """Serialise metadata to CBOR, deterministically: the oldest version that holds it, canonical key order."""
    if type(meta) not in RECORD_NAMES:
        raise MetadataError(f"cannot encode {type(meta).__name__}: not a metadata type")
    return flowerdock.encode(meta)


def decode(data: bytes, kind: type[M] = TrainProcessMetadata) -> M:
    """Parse untrusted bytes into metadata of `kind`, or raise MetadataError."""
    return flowerdock.decode(data, kind, versions=_READERS)


def to_config_record(meta: Metadata) -> tuple[str, ConfigRecord]:
    """The (record name, ConfigRecord) pair a ClientApp puts in its reply."""
    if type(meta) not in RECORD_NAMES:
        raise MetadataError(f"cannot encode {type(meta).__name__}: not a metadata type")
    return flowerdock.to_config_record(meta)


def from_content(content: RecordDict, kind: type[M]) -> M:
    """Find and decode the metadata in a reply's content, or raise MetadataError."""
    return flowerdock.from_content(content, kind, versions=_READERS)
