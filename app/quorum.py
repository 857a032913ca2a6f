"""Waiting, bounded: for SuperNodes to connect, and for their replies.

Flower 1.42's own loops wait without bound: `sample_nodes` sleeps until
`min_available_nodes` are connected (one lost node of "every node" stalls a run
forever), and `Grid.send_and_receive` polls every 3 s until every reply is in or
the round timeout passes. Here a round needs a *quorum*:

  nodes    `wait_for_nodes` returns once `wanted` nodes are connected, or, after
           `timeout` s, once at least `quorum` are; with fewer it raises
           `RunFailed`. It logs when the wait starts and every `log_every` s.
  replies  `QuorumGrid.send_and_receive` pulls every `poll_interval` s. Once
           `min_replies` replies are in, the others get as long again as that
           took, and at least `straggler_timeout` s, then the round goes on
           without them; `round_timeout` bounds the whole wait.

A crashed or cut-off node therefore costs a round a few seconds, not the
SuperLink's heartbeat expiry (60 s) or the round timeout. The strategy logs
which node each missing reply was asked of. A pull the SuperLink answers with a
server error (Flower's Grid retries 502-504 itself, not 500) is logged and tried
again until the round's wait ends: a reply it lost counts as missing, and the
run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from app.run_config import default
from flowerdock_logging import get_logger

log = get_logger("app.quorum")


class RunFailed(RuntimeError):
    """The run cannot succeed; the message says why. Ends the ServerApp as failed."""


@dataclass(frozen=True)
class WaitPolicy:
    """The run config's wait settings; the ServerApp passes them all (server_app.wait_policy)."""

    min_replies: int = default("min-replies")
    round_timeout: float = default("round-timeout")
    straggler_timeout: float = default("straggler-timeout")
    poll_interval: float = default("poll-interval")


def wait_for_nodes(grid: Grid, *, wanted: int, quorum: int, timeout: float, run_id: int,
                   log_every: float = 15.0) -> list[int]:
    """The connected node IDs once `wanted` are there, or a quorum after `timeout` s."""
    started = time.monotonic()
    next_log = started
    while True:
        nodes = list(grid.get_node_ids())
        waited = time.monotonic() - started
        if len(nodes) >= wanted:
            if waited >= 1.0:
                log.info("nodes_ready", run_id=run_id, connected=len(nodes), waited_s=round(waited, 1))
            return nodes
        if waited >= timeout:
            if len(nodes) >= quorum:
                log.warning("nodes_wait_ended", run_id=run_id, connected=len(nodes), wanted=wanted,
                            quorum=quorum, waited_s=round(waited, 1), hint="going on with the quorum")
                return nodes
            raise RunFailed(f"only {len(nodes)} SuperNodes connected after {timeout:.0f} s, fewer than "
                            f"the quorum of {quorum} (min-nodes): check that they are running and "
                            "can reach the SuperLink")
        if time.monotonic() >= next_log:
            log.info("nodes_waiting", run_id=run_id, connected=len(nodes), wanted=wanted, quorum=quorum,
                     waited_s=round(waited, 1), timeout_s=timeout)
            next_log += log_every
        time.sleep(1.0)


class QuorumGrid:
    """A Grid whose `send_and_receive` waits for a quorum, then briefly for stragglers.

    It returns one reply per message sent, each with the asked node as its source:
    a node that did not answer in time gets an error reply `NO_REPLY`, and an error
    the SuperLink made for a lost node (its source is the SuperLink, not the node)
    is re-addressed to that node. Everything else is the wrapped Grid's.
    """

    def __init__(self, grid: Grid, policy: WaitPolicy) -> None:
        self._grid, self.policy = grid, policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        pushed = list(self._grid.push_messages(messages))  # sets each message's ID, in order
        sent = {message_id: message for message_id, message in zip(pushed, messages) if message_id}
        replies = self._pull(set(sent), timeout)
        answered = {reply.metadata.reply_to_message_id: reply for reply in replies}
        return [_from_asked_node(sent[message_id], answered.get(message_id), self.policy) for message_id in sent]

    def _pull(self, pending: set[str], timeout: float | None) -> list[Message]:
        policy = self.policy
        started = time.monotonic()
        limit = policy.round_timeout if timeout is None else min(timeout, policy.round_timeout)
        deadline, quorum, straggling = started + limit, min(policy.min_replies, len(pending)), False
        replies: list[Message] = []
        while pending and time.monotonic() < deadline:
            pulled = [reply for reply in self._pull_once(pending) if reply.metadata.reply_to_message_id in pending]
            replies += pulled
            pending -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not straggling and len(replies) >= quorum:  # the rest get as long again, at least the minimum
                straggling, took = True, time.monotonic() - started
                deadline = min(deadline, time.monotonic() + max(policy.straggler_timeout, took))
            if pending:
                time.sleep(min(policy.poll_interval, max(deadline - time.monotonic(), 0.0)))
        return replies

    def _pull_once(self, pending: set[str]) -> list[Message]:
        try:
            return list(self._grid.pull_messages(pending))
        except httpx.HTTPStatusError as error:
            if error.response.status_code < 500:
                raise
            log.warning("superlink_pull_failed", status=error.response.status_code, pending=len(pending),
                        error=error.response.text[:300], hint="tried again until the round's wait ends")
            time.sleep(1.0)  # not a tight loop against a SuperLink in trouble
            return []


NO_REPLY = ErrorCode.REPLY_MESSAGE_UNAVAILABLE


def _from_asked_node(asked: Message, reply: Message | None, policy: WaitPolicy) -> Message:
    if reply is None:
        return Message(Error(NO_REPLY, f"no reply within the round's wait (straggler-timeout "
                                       f"{policy.straggler_timeout:g} s, round-timeout {policy.round_timeout:g} s)"),
                       reply_to=asked)
    if reply.has_error() and reply.metadata.src_node_id != asked.metadata.dst_node_id:
        return Message(reply.error, reply_to=asked)
    return reply
