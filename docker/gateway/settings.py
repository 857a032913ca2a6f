"""The gateway's limits: read from the environment, checked, written into nginx.conf.

Each setting's default is here and only here; docker/server.env.example says what
each is for and docs/gateway.md why its default (from the measured traffic). A value
nginx would refuse, or one too small for Flower's own traffic, stops the gateway
at once with one line naming the setting and what to set.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

# Flower 1.42 sends arrays in chunks of at most 5 MiB (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE)
# and a FAB of at most 10 MiB (FAB_MAX_SIZE); a body limit under these breaks runs.
FLOWER_CHUNK, FLOWER_FAB = 5 * 2**20, 10 * 2**20  # the gateway image has no Flower: tests compare them

DEFAULTS = {
    "GATEWAY_WORKERS": "auto",
    "HEADER_TIMEOUT": "10s",
    "BODY_TIMEOUT": "10s",
    "KEEPALIVE_TIMEOUT": "60s",
    "FLEET_MAX_BODY": "8m",
    "CONTROL_MAX_BODY": "16m",
    "FLEET_RATE_PER_CLIENT": "100r/s",
    "FLEET_BURST_PER_CLIENT": "200",
    "FLEET_CONNECTIONS_PER_CLIENT": "32",
    "FLEET_UPLOADS_TOTAL": "64",
    "FLEET_REQUESTS_TOTAL": "32",
    "ALLOWED_CLIENTS": "",
}


class SettingError(ValueError):
    """A setting that cannot work; the message says which and what to set."""


def _time(name: str, value: str) -> str:
    if not re.fullmatch(r"[1-9]\d*(ms|s|m)?", value):
        raise SettingError(f"{name}={value!r} is not a duration: write e.g. 10s, 500ms or 1m")
    return value


def _count(name: str, value: str) -> str:
    if not re.fullmatch(r"[1-9]\d{0,5}", value):
        raise SettingError(f"{name}={value!r} is not a whole number above 0")
    return value


def _connections(name: str, value: str) -> str:
    """A limit_conn count: nginx takes at most 65535."""
    if int(_count(name, value)) > 65535:
        raise SettingError(f"{name}={value} is more than nginx can count (65535): set at most 65535")
    return value


def _bytes(value: str) -> int | None:
    match = re.fullmatch(r"(\d+)([kKmM]?)", value)
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20}[match.group(2).lower()]


def _size(name: str, value: str, floor: int, why: str) -> str:
    size = _bytes(value)
    if size is None:
        raise SettingError(f"{name}={value!r} is not a size: write e.g. 8m or 512k")
    if size <= floor:
        raise SettingError(f"{name}={value} is too small: {why} ({floor / 2**20:.1f} MiB); set at least "
                           f"{floor // 2**20 + 1}m")
    return value


def _workers(name: str, value: str) -> str:
    if value != "auto" and not re.fullmatch(r"[1-9]\d?", value):
        raise SettingError(f"{name}={value!r}: write auto (one per core) or a number of processes")
    return value


def _rate(name: str, value: str) -> str:
    if not re.fullmatch(r"[1-9]\d*r/[sm]", value):
        raise SettingError(f"{name}={value!r} is not a rate: write e.g. 50r/s or 600r/m")
    return value


def allowed_networks(value: str) -> list[str]:
    """ALLOWED_CLIENTS: addresses or networks, separated by commas or spaces."""
    networks = []
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingError(f"ALLOWED_CLIENTS holds {item!r}, which is not an address or a network: "
                               "write e.g. 203.0.113.7, 198.51.100.0/24") from None
    return networks


CHECKS = {
    "GATEWAY_WORKERS": _workers,
    "HEADER_TIMEOUT": _time, "BODY_TIMEOUT": _time, "KEEPALIVE_TIMEOUT": _time,
    "FLEET_MAX_BODY": lambda n, v: _size(n, v, FLOWER_CHUNK, "a SuperNode sends model chunks of up to 5 MiB"),
    "CONTROL_MAX_BODY": lambda n, v: _size(n, v, FLOWER_FAB, "`flwr run` sends FABs of up to 10 MiB"),
    "FLEET_RATE_PER_CLIENT": _rate,
    "FLEET_BURST_PER_CLIENT": _count, "FLEET_CONNECTIONS_PER_CLIENT": _connections,
    "FLEET_UPLOADS_TOTAL": _connections, "FLEET_REQUESTS_TOTAL": _connections,
}


def settings(environ: dict[str, str]) -> dict[str, str]:
    """Every setting, from the environment (an empty value means the default), checked."""
    values = {name: (environ.get(name) or "").strip() or default for name, default in DEFAULTS.items()}
    for name, check in CHECKS.items():
        check(name, values[name])
    networks = allowed_networks(values["ALLOWED_CLIENTS"])
    values["ALLOW_BY_DEFAULT"] = "0" if networks else "1"
    values["ALLOWED_CLIENT_LINES"] = "\n".join(f"    {network} 1;" for network in networks)
    return values


def render(template: Path, values: dict[str, str]) -> str:
    """The template with each ${NAME} replaced; an unknown name is a bug here, not a setting."""
    def value(match: re.Match) -> str:
        return values[match.group(1)]
    return re.sub(r"\$\{([A-Z_]+)\}", value, template.read_text())
