"""Fake SuperNodes: load for a SuperLink, N nodes as threads spread over P processes.

Each node speaks Flower's real Fleet protocol through Flower's own client (flwr 1.42,
`flwr.supernode.fleet_http_connection.http_request_response`): activates with its own EC key
(or registers itself), heartbeats (Flower's HeartbeatSender), pulls as Flower's SuperNode loop
does (3 s sleep after an empty pull), fetches run and FAB once per run, pulls and confirms a
message's objects, pushes a reply and its objects. Only the ClientApp is fake: a train reply is
the received model plus a small step (a direction common to all nodes plus a tenth of it in
per-node noise, which screening's outlier and cosine checks accept), with the metrics and CBOR
metadata of the real ClientApp (app/client_app.py).

Run it from the checkout's root:

  python -m scripts.fake_fleet keys --nodes 200 --out KEYS   # KEYS/fake-0001.key, .pub, ...
  (register KEYS/*.pub as a deployment does: docker/register_supernodes.py with KEYS_DIR=KEYS)
  python -m scripts.fake_fleet run --superlink HOST:PORT --root-certificates ca.crt --keys KEYS \\
      --processes 4 --duration 300       # one JSON summary at the end

Without --keys, --nodes N nodes register themselves (for a SuperLink without
--enable-supernode-auth). Library: FakeFleet(settings, keys).start(), .stop() -> records;
summarize(records, since, until) -> the summary (`from scripts.fake_fleet import ...` from the
checkout's root, or `from fake_fleet import ...` with scripts/ on sys.path, as the benchmarks do).
scripts/local_fleet/ runs it. Its parts:

  settings.py  Settings: what every node of a fleet shares;
  records.py   one process's records (activations, pulls, HTTP requests, replies, failures);
  replies.py   the fake ClientApp: train and evaluate replies that pass screening;
  node.py      one node: Flower's SuperNode loop on Flower's Fleet client, timed;
  keys.py      the nodes' key pairs, as certs/ makes them and docker/register_supernodes.py reads;
  fleet.py     FakeFleet: the nodes spread over processes, and their records gathered;
  summary.py   the JSON summary of records;
  __main__.py  the command line (keys, run).
"""

from __future__ import annotations

from .fleet import FakeFleet
from .keys import make_keys
from .records import KINDS
from .replies import EVALUATE_METRICS, TRAIN_METRICS, evaluate_reply, reply_to, train_reply
from .settings import Settings
from .summary import percentile, summarize

__all__ = ["EVALUATE_METRICS", "KINDS", "TRAIN_METRICS", "FakeFleet", "Settings", "evaluate_reply", "make_keys",
           "percentile", "reply_to", "summarize", "train_reply"]
