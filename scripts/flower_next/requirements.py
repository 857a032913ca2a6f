"""PEP 508 with the standard library only: the Requires-Dist lines of a METADATA file, whether their
markers hold on this interpreter, and which of them nothing installed meets (tests/test_flower_next.py)."""

from __future__ import annotations

import os
import platform
import re
import sys
from email.parser import HeaderParser
from typing import NamedTuple

from .versions import satisfies, version_key

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*\(?([^;()]*?)\)?\s*(?:;\s*(.*))?$")
_CLAUSE = re.compile(r"""([a-z_]+)\s*(===|==|!=|<=|>=|~=|<|>|not\s+in|in)\s*(['"])(.*?)\3""")
_BOOLEANS = re.compile(r"(?:\s|\(|\)|True|False|and|or)*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Requirement(NamedTuple):
    name: str  # canonical
    extras: tuple[str, ...]
    specifier: str
    marker: str
    text: str  # as written, without the marker (what pip is given)


def parse_requirement(line: str) -> Requirement:
    """One Requires-Dist line: `name[extras] specifier; marker`."""
    match = _REQUIREMENT.match(line)
    if not match:
        raise ValueError(f"not a requirement: {line!r}")
    name, extras, specifier, marker = match.groups()
    extras = tuple(sorted(canonical(e) for e in (extras or "").split(",") if e.strip()))
    text = line.split(";", 1)[0].strip()
    return Requirement(canonical(name), extras, specifier.replace(" ", ""), (marker or "").strip(), text)


def marker_environment() -> dict[str, str]:
    """PEP 508's environment of this interpreter (the new venv's python is the same one)."""
    return {"python_version": ".".join(platform.python_version_tuple()[:2]),
            "python_full_version": platform.python_version(), "os_name": os.name, "sys_platform": sys.platform,
            "platform_system": platform.system(), "platform_machine": platform.machine(),
            "platform_release": platform.release(), "implementation_name": sys.implementation.name,
            "platform_python_implementation": platform.python_implementation(), "extra": ""}


def marker_applies(marker: str, environment: dict[str, str], extras: tuple[str, ...] = ()) -> bool:
    """Whether a requirement's marker holds here, for the base install or any of `extras`."""
    if not marker:
        return True
    return any(_evaluate(marker, {**environment, "extra": extra}) for extra in ("", *extras))


def _evaluate(marker: str, environment: dict[str, str]) -> bool:
    expression = _CLAUSE.sub(lambda m: str(_compare(m[1], m[2], m[4], environment)), marker)
    if not _BOOLEANS.fullmatch(expression):  # only what _CLAUSE made, and/or, parentheses
        raise ValueError(f"marker not understood: {marker!r}")
    return bool(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307 - True/False/and/or/() only


def _compare(variable: str, op: str, value: str, environment: dict[str, str]) -> bool:
    have = environment.get(variable, "")
    if variable == "extra":
        have, value = canonical(have), canonical(value)
    op = " ".join(op.split())
    if op in ("in", "not in"):
        return (have in value) == (op == "in")
    if variable.endswith("_version") and version_key(have) and version_key(value.removesuffix(".*")):
        return satisfies(have, f"{op}{value}")
    return {"==": have == value, "!=": have != value, "===": have == value}.get(op, False)


def requires_dist(metadata: str) -> list[str]:
    """The Requires-Dist lines of a METADATA file."""
    return HeaderParser().parsestr(metadata).get_all("Requires-Dist") or []


def unmet(requirements: list[str], installed: dict[str, str], environment: dict[str, str],
          extras: tuple[str, ...] = ()) -> list[Requirement]:
    """Those that apply here and that nothing installed meets (absent, or another version).

    A requirement on `flwr` itself is met by the nightly (flwr-nightly is Flower under another name).
    """
    wanted = [parse_requirement(line) for line in requirements]
    return [r for r in wanted if r.name != "flwr" and marker_applies(r.marker, environment, extras)
            and not (r.name in installed and satisfies(installed[r.name], r.specifier))]
