"""Fake SuperNodes (scripts/fake_fleet/) against a real SuperLink, as plain processes, no Docker.

Run it from the checkout's root:

  .venv/bin/python -m scripts.local_fleet check --nodes 10          # exit 0: the run completed,
                                                                     # every node ok every round
  .venv/bin/python -m scripts.local_fleet measure --nodes 20,50,100  # a table: idle pulls, rounds

Each size gets a fresh federation in a temporary folder, set up as the Docker deployment is:
certificates from certs/make_certs.py, a SuperLink with TLS, SuperNode authentication and an
SQLite database, in process isolation with its own SuperExec (flower-superexec) running the
ServerApp; the fake nodes' public keys registered through the Control API by
docker/register_supernodes.py; the run submitted by docker/submit.py (`flwr run`), whose status is
then asked until the run ends (submit.py gives up with the run still going when a busy SuperLink
breaks its log stream). The fake nodes idle for --idle seconds first (idle pull latency), then
serve the run. Without a gateway: the SuperLink's own port. `check` passes when the run ends
finished:completed with every node `ok` in every round's client_round lines. KEEP_FLEET_HOME=1
keeps each temporary folder (logs, database) for a look afterwards. Its parts:

  federation.py  Federation: the SuperLink and SuperExec, registering keys, submitting a run;
                 reading processes' CPU and memory from /proc;
  measure.py     one size measured (one_size), the sampler, the rounds and errors from the logs, the table;
  __main__.py    the command line (check, measure).
"""

from __future__ import annotations

from .federation import Federation
from .measure import one_size, rounds_of, superlink_errors, table

__all__ = ["Federation", "one_size", "rounds_of", "superlink_errors", "table"]
