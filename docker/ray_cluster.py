"""What the simulation's Ray cluster holds, as one JSON line (`ray_cluster`): its nodes,
and on which of them Flower's ClientApp actors ran, per Ray job (one job per run).

  docker compose -f docker/compose.ray.yaml exec ray-head python3 /usr/local/lib/flowerdock/ray_cluster.py

Ray's state API (`ray list actors`) is served by Ray's dashboard, which the images
leave out (flwr[simulation] installs Ray without it); this asks the GCS for its node
and actor tables instead, as a driver of its own on this container's Ray node.
"""

from __future__ import annotations

import os
from collections import Counter

import ray
from ray._private import state  # the GCS's tables: Ray's DeveloperAPI, without the dashboard

from flowerdock_logging import get_logger

ACTOR_CLASS = "ClientAppActor"  # flwr/simulation/ray_transport/ray_actor.py


def cluster() -> dict:
    nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
              "head": "node:__internal_head__" in n["Resources"] or n.get("IsHeadNode", False),
              "cpus": n["Resources"].get("CPU", 0)} for n in ray.nodes()]
    per_node: Counter = Counter()
    for actor in state.actors().values():
        if actor["ActorClassName"].rsplit(".", 1)[-1] == ACTOR_CLASS:
            per_node[(actor["JobID"], actor["Address"]["NodeID"], actor["State"])] += 1
    actors = [{"job_id": job, "node_id": node, "state": status, "count": count}
              for (job, node, status), count in sorted(per_node.items())]
    return {"nodes": nodes, "clientapp_actors": actors}


if __name__ == "__main__":
    # Ray's own logger would print text: its records go to our JSON handler instead.
    ray.init(address=os.getenv("RAY_ADDRESS") or "auto", configure_logging=False, log_to_driver=False)
    try:
        get_logger("app.ray").info("ray_cluster", **cluster())
    finally:
        ray.shutdown()
