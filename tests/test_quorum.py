"""Bounded waits: for nodes, and for replies (a fake Grid with scripted timing)."""

from __future__ import annotations

import time

import httpx
import pytest
from flwr.app import Error, Message, RecordDict

from app.quorum import NO_REPLY, QuorumGrid, RunFailed, WaitPolicy, wait_for_nodes
from app.round_log import Outcome, log_client_round
from tests.conftest import json_lines, server_identity


@pytest.fixture(autouse=True)
def identity():
    yield from server_identity(7)


class ScriptedGrid:
    """Nodes connect at given times; each node replies `delay` s after a push (None: never)."""

    def __init__(self, connect_at=None, delays=None, superlink_errors=(), failing_pulls=0, status=500):
        self.t0 = time.monotonic()
        self.connect_at = connect_at or {}
        self.delays = delays or {}
        self.superlink_errors = set(superlink_errors)  # nodes the SuperLink reports lost (source: node 1)
        self.sent: dict[str, tuple[Message, float]] = {}
        self.pulls = 0
        self.failing_pulls, self.status = failing_pulls, status  # the first pulls answered with that status

    def get_node_ids(self):
        now = time.monotonic() - self.t0
        return [node for node, at in self.connect_at.items() if at <= now]

    def push_messages(self, messages):
        ids = []
        for number, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{number}"
            self.sent[f"m{number}"] = (message, time.monotonic())
            ids.append(f"m{number}")
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls <= self.failing_pulls:
            request = httpx.Request("POST", "https://superlink:8000/v1/runtime/pull-messages")
            raise httpx.HTTPStatusError("server error", request=request,
                                        response=httpx.Response(self.status, request=request, text="boom"))
        replies = []
        for message_id in message_ids:
            message, pushed = self.sent[message_id]
            node = message.metadata.dst_node_id
            delay = self.delays.get(node)
            if delay is None or time.monotonic() - pushed < delay:
                continue
            if node in self.superlink_errors:
                reply = Message(Error(5, "Node unavailable"), reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = 1  # as the SuperLink sends it
                replies.append(reply)
            else:
                replies.append(Message(RecordDict(), reply_to=message))
        return replies


def instructions(*nodes):
    return [Message(RecordDict(), dst_node_id=node, message_type="train") for node in nodes]


def test_nodes_ready_returns_at_once_when_everyone_is_there(capsys):
    grid = ScriptedGrid(connect_at={1: 0, 2: 0, 3: 0})
    assert sorted(wait_for_nodes(grid, wanted=3, quorum=2, timeout=5, run_id=7)) == [1, 2, 3]


def test_a_missing_node_costs_the_timeout_then_the_quorum_goes_on(capsys):
    grid = ScriptedGrid(connect_at={1: 0, 2: 0})
    started = time.monotonic()
    assert sorted(wait_for_nodes(grid, wanted=3, quorum=2, timeout=2, run_id=7, log_every=10)) == [1, 2]
    assert 2 <= time.monotonic() - started < 4
    events = [e["event"] for e in json_lines(capsys.readouterr().out)]
    assert events == ["nodes_waiting", "nodes_wait_ended"]  # logged when it starts, not every second


def test_no_quorum_fails_the_run_with_a_clear_reason():
    grid = ScriptedGrid(connect_at={1: 0})
    with pytest.raises(RunFailed, match="only 1 SuperNodes connected after 1 s, fewer than the quorum of 2"):
        wait_for_nodes(grid, wanted=3, quorum=2, timeout=1, run_id=7)


def test_a_late_node_is_waited_for():
    grid = ScriptedGrid(connect_at={1: 0, 2: 0, 3: 1.5})
    assert sorted(wait_for_nodes(grid, wanted=3, quorum=2, timeout=10, run_id=7)) == [1, 2, 3]


def test_every_reply_in_time_is_returned():
    grid = ScriptedGrid(delays={1: 0.1, 2: 0.3, 3: 0.5})
    policy = WaitPolicy(min_replies=2, round_timeout=30, straggler_timeout=5, poll_interval=0.05)
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2, 3), timeout=30)
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2, 3]
    assert not any(r.has_error() for r in replies)


def test_a_dead_node_costs_the_straggler_wait_not_the_round_timeout():
    grid = ScriptedGrid(delays={1: 0.2, 2: 0.3, 3: None})
    policy = WaitPolicy(min_replies=2, round_timeout=60, straggler_timeout=1, poll_interval=0.05)
    started = time.monotonic()
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2, 3), timeout=60)
    assert 1.0 <= time.monotonic() - started < 2.5
    by_node = {r.metadata.src_node_id: r for r in replies}
    assert set(by_node) == {1, 2, 3}
    assert by_node[3].has_error() and by_node[3].error.code == NO_REPLY  # logged as missing, with node 3's ID
    assert "no reply within" in by_node[3].error.reason


def test_stragglers_get_as_long_again_as_the_quorum_took():
    grid = ScriptedGrid(delays={1: 1.0, 2: 1.0, 3: 1.8})
    policy = WaitPolicy(min_replies=2, round_timeout=60, straggler_timeout=0.1, poll_interval=0.05)
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2, 3))
    assert not any(r.has_error() for r in replies)  # 1.8 s < 1.0 s + 1.0 s


def test_without_a_quorum_the_round_timeout_bounds_the_wait():
    grid = ScriptedGrid(delays={1: 0.1, 2: None, 3: None})
    policy = WaitPolicy(min_replies=2, round_timeout=1.0, straggler_timeout=0.1, poll_interval=0.05)
    started = time.monotonic()
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2, 3), timeout=100)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert [r.has_error() for r in sorted(replies, key=lambda r: r.metadata.src_node_id)] == [False, True, True]


def test_an_error_the_superlink_made_names_the_node_that_was_asked():
    grid = ScriptedGrid(delays={1: 0.1, 2: 0.1}, superlink_errors={2})
    policy = WaitPolicy(min_replies=1, round_timeout=10, straggler_timeout=1, poll_interval=0.05)
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2))
    [lost] = [r for r in replies if r.has_error()]
    assert lost.metadata.src_node_id == 2 and lost.error.code == 5


def test_a_lost_node_the_superlink_says_nothing_of_is_logged_missing_with_its_own_id(capsys):
    # Flower 1.43's deployment runtime sends no NODE_UNAVAILABLE reply for a lost node (docs/flower-upgrades.md):
    # its instruction simply gets no reply. The line still names that node, and why.
    grid = ScriptedGrid(delays={1: 0.1, 2: 0.1, 3: None})
    policy = WaitPolicy(min_replies=2, round_timeout=10, straggler_timeout=0.3, poll_interval=0.05)
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2, 3))
    for reply in replies:
        outcome = Outcome.from_error(reply) if reply.has_error() else Outcome(reply, "ok")
        if outcome.status != "ok":
            log_client_round(7, 1, "train", outcome)
    [line] = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "client_round"]
    assert int(line["node_id"]) == 3 and (line["status"], line["reason"]) == ("missing", "no_reply")
    assert line["level"] == "warning" and "no reply within the round's wait" in line["error"]


def test_other_calls_reach_the_wrapped_grid():
    grid = ScriptedGrid(connect_at={4: 0})
    assert QuorumGrid(grid, WaitPolicy()).get_node_ids() == [4]


def test_a_superlink_server_error_on_a_pull_is_tried_again_and_logged(capsys):
    grid = ScriptedGrid(delays={1: 0.1, 2: 0.1}, failing_pulls=2)
    policy = WaitPolicy(min_replies=2, round_timeout=30, straggler_timeout=1, poll_interval=0.05)
    replies = QuorumGrid(grid, policy).send_and_receive(instructions(1, 2))
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2] and not any(r.has_error() for r in replies)
    failed = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "superlink_pull_failed"]
    assert [(e["status"], e["level"], e["pending"]) for e in failed] == [(500, "warning", 2)] * 2


def test_a_superlink_failing_every_pull_costs_the_round_s_wait_and_no_more():
    grid = ScriptedGrid(delays={1: 0.1}, failing_pulls=10**6)
    policy = WaitPolicy(min_replies=1, round_timeout=2.5, straggler_timeout=1, poll_interval=0.05)
    started = time.monotonic()
    [reply] = QuorumGrid(grid, policy).send_and_receive(instructions(1))
    assert 2.5 <= time.monotonic() - started < 4.5
    assert reply.has_error() and reply.error.code == NO_REPLY


def test_a_refusal_of_the_pull_is_not_hidden():
    grid = ScriptedGrid(delays={1: 0.1}, failing_pulls=1, status=400)
    with pytest.raises(httpx.HTTPStatusError):
        QuorumGrid(grid, WaitPolicy(round_timeout=5)).send_and_receive(instructions(1))
