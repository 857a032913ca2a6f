"""What the strategy asks of each node it samples to train: a typed instruction.

The tutorial's custom message the other way, strategy -> ClientApp: `TrainInstruction` is
declared once on the flowerdock layer and travels in each train message's content as the
`train_instruction` ConfigRecord. The ClientApp decodes it as untrusted (every bound below is
checked; a bad one fails that node's reply with the field and why), trains as it says, and both
sides log it: the ServerApp's `client_round` line (`instruction`) and the site's
`local_train_done`.

The run config sets what every node is asked (`local-epochs`, `learning-rate`, `batch-size`).
With `pace-factor` above 0 the strategy paces slow nodes: a node whose last accepted training
would take longer than pace-factor x the median node's, at the baseline's epochs, is asked for
fewer epochs (at least one), so that its next round takes about that long. Off by default: a
paced site contributes less training on its own data each round, a trade of fairness for round
time that a federation makes knowingly (docs/app.md#pacing-slow-sites).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from flwr.app import Message, RecordDict

from app.run_config import default
from flowerdock import Range, Version, message, to_config_record

MAX_EPOCHS = 1_000
MAX_LEARNING_RATE = 10.0
MAX_BATCH_SIZE = 65_536


@message(kind="train_instruction", record="train_instruction", versions=[Version(1)])
class TrainInstruction:
    """How one node is to train this round."""

    local_epochs: Annotated[int, Range(1, MAX_EPOCHS)]
    learning_rate: Annotated[float, Range(0, MAX_LEARNING_RATE)]
    batch_size: Annotated[int, Range(1, MAX_BATCH_SIZE)]

    def settings(self) -> dict[str, int | float]:
        """The run-config keys this instruction sets for the node's training."""
        return {"local-epochs": self.local_epochs, "learning-rate": self.learning_rate, "batch-size": self.batch_size}


def baseline(config: Mapping[str, Any]) -> TrainInstruction:
    """What the run config asks of every node."""
    return TrainInstruction(local_epochs=int(config["local-epochs"]), learning_rate=float(config["learning-rate"]),
                            batch_size=int(config["batch-size"]))


class Pacer:
    """Chooses each sampled node's instruction from its last accepted train reply, and
    remembers what each node was sent, for the logs and for the next choice."""

    def __init__(self, base: TrainInstruction, pace_factor: float = default("pace-factor")) -> None:
        self.base, self.pace_factor = base, pace_factor
        self._seconds_per_epoch: dict[int, float] = {}  # node -> its last accepted training's pace
        self._sent: dict[tuple[int, int], TrainInstruction] = {}  # (round, node) -> instruction, this round only

    def plan(self, node_ids: Iterable[int]) -> dict[int, TrainInstruction]:
        node_ids = list(node_ids)
        plans = {node: self.base for node in node_ids}
        known = {node: self._seconds_per_epoch[node] for node in node_ids if node in self._seconds_per_epoch}
        if self.pace_factor <= 0 or len(known) < 2:
            return plans
        limit = self.pace_factor * statistics.median(known.values()) * self.base.local_epochs
        for node, per_epoch in known.items():
            if per_epoch * self.base.local_epochs > limit:
                epochs = max(1, math.floor(limit / per_epoch))
                plans[node] = TrainInstruction(epochs, self.base.learning_rate, self.base.batch_size)
        return plans

    def attach(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        """Each train message again, its content carrying its node's instruction."""
        messages = list(messages)
        plans = self.plan(m.metadata.dst_node_id for m in messages)
        self._sent.clear()  # only this round's are asked for again (its replies' lines and paces)
        sent = []
        for m in messages:
            node, instruction = m.metadata.dst_node_id, plans[m.metadata.dst_node_id]
            name, record = to_config_record(instruction)
            content = RecordDict({**dict(m.content.items()), name: record})  # the model's record shared, not copied
            sent.append(Message(content=content, message_type=m.metadata.message_type, dst_node_id=node))
            self._sent[(server_round, node)] = instruction
        return sent

    def sent(self, server_round: int, node_id: int) -> TrainInstruction | None:
        return self._sent.get((server_round, node_id))

    def note(self, server_round: int, node_id: int, training_time: float) -> None:
        """An accepted train reply: the node's pace, for its next instruction."""
        instruction = self.sent(server_round, node_id) or self.base
        self._seconds_per_epoch[node_id] = training_time / instruction.local_epochs
