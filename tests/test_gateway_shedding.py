"""Past the knee, the gateway sheds and nothing is lost: the load generator of `make bench-superlink`
(fake SuperNodes on Flower's own Fleet client, registered keys, TLS, through the real gateway to a
real SuperLink and SuperExec), with the gateway's cap on requests at once (FLEET_REQUESTS_TOTAL)
set to 2, so that 20 nodes are far past it, and every round waiting for all 20 replies. The gateway answers the excess 503, which Flower's
client retries; every node's reply still reaches every exchange of the run, no node is counted
offline, and no heartbeat is ever shed."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.docker

sys.path.insert(0, str(ROOT / "scripts"))
import bench_superlink  # noqa: E402


def test_twenty_nodes_past_a_cap_of_two_are_shed_and_every_reply_arrives(images):
    result = bench_superlink.one_size(20, shed=2, idle=10, quorum=1.0)
    print(result)
    assert result["status"] == "finished:completed", result
    assert result["exchanges_done"] == bench_superlink.ROUNDS + 1  # every train round and the final evaluation
    assert result["replies_lost"] == 0 and result["not_ok"] == {}, result
    assert result["max_offline"] == 0 and result["heartbeat_failures"] == 0 and result["node_failures"] == {}, result
    # Shed for real: the fake nodes saw 503s, and the gateway logged why.
    assert result["shed_503"] > 0 and result["gateway_refused"].get("concurrent requests 503", 0) > 0, result
    assert "send-node-heartbeat" not in result["http_503_by_path"], result  # a heartbeat is never shed
    assert result["superlink_500s"] == 0, result
