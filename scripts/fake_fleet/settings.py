"""Settings: what every fake node of a fleet shares (its SuperLink, its pace, its replies)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    superlink: str  # host:port of the Fleet API (the gateway's public port, or the SuperLink's)
    root_certificates: str | None = None  # CA file; None: plain HTTP (no node keys then)
    idle_sleep: float = 3.0  # after an empty pull: Flower's SuperNode sleeps 3 s
    ramp: float = 10.0  # nodes start spread over this many seconds, as real sites do not start at once
    step: float = 0.01  # the common step per weight; the per-node noise is a tenth of it
    examples: int = 100  # num-examples each reply declares
    max_wait_time: float | None = 300.0  # a node that cannot activate in this long gives up
    restart_delay: float = 5.0  # a node that ended (as Flower's SuperNode would) starts again after this
