"""PEP 440 with the standard library only: the order of versions, which ones are pre-releases,
whether a version meets a specifier (tests/test_flower_next.py)."""

from __future__ import annotations

import re

_VERSION = re.compile(
    r"^(?:(\d+)!)?(\d+(?:\.\d+)*)"
    r"(?:[._-]?(a|b|rc|c|alpha|beta|pre|preview)[._-]?(\d*))?"
    r"(?:[._-]?(?:post|rev|r)[._-]?(\d*)|-(\d+))?"
    r"(?:[._-]?dev[._-]?(\d*))?(?:\+[a-z0-9._-]+)?$")
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_SPEC = re.compile(r"^\s*(===|==|!=|<=|>=|~=|<|>)\s*([^\s]+)\s*$")


def version_key(version: str) -> tuple | None:
    """A sort key by PEP 440 for the usual forms (dev < a < b < rc < release < post); None if not one."""
    match = _VERSION.match(version.strip().lower())
    if not match:
        return None
    epoch, release, pre, pre_n, post, post_dash, dev = match.groups()
    numbers = [int(part) for part in release.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    post_n = post if post is not None else post_dash
    if pre:
        pre_key = (_PRE[pre], int(pre_n or 0))
    else:  # a dev release of X comes before X's pre-releases
        pre_key = (-1, 0) if dev is not None and post_n is None else (3, 0)
    return (int(epoch or 0), tuple(numbers), pre_key, int(post_n or 0) if post_n is not None else -1,
            int(dev or 0) if dev is not None else float("inf"))


def is_prerelease(version: str) -> bool:
    key = version_key(version)
    return key is not None and (key[2][0] < 3 or key[4] != float("inf"))


def satisfies(version: str, specifier: str) -> bool:
    """Whether `version` meets every clause of `specifier` (">=1,<2"); an unreadable one never does."""
    key = version_key(version)
    return key is not None and all(_meets(version, key, clause) for clause in specifier.split(",") if clause.strip())


def _meets(version: str, key: tuple, clause: str) -> bool:
    match = _SPEC.match(clause)
    if not match:
        return False
    op, wanted = match.groups()
    if op == "===":
        return version == wanted
    if wanted.endswith(".*"):  # == and != on a prefix: its release numbers as written
        prefix, length = version_key(wanted[:-2]), len(wanted[:-2].split("!")[-1].split("."))
        same = prefix is not None and key[0] == prefix[0] and _padded(key[1], length) == _padded(prefix[1], length)
        return same if op == "==" else not same
    other = version_key(wanted)
    if other is None:
        return False
    if op == "~=":
        parts = wanted.split(".")
        return key >= other and _meets(version, key, f"=={'.'.join(parts[:-1])}.*")
    return {"==": key == other, "!=": key != other, "<": key < other, "<=": key <= other,
            ">": key > other, ">=": key >= other}[op]


def _padded(numbers: tuple, length: int) -> tuple:
    return (tuple(numbers) + (0,) * length)[:length]
