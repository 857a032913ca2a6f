"""Which flwr-nightly to try: the one FLOWER_NEXT pins, or the newest pre-release on PyPI."""

from __future__ import annotations

import json
import os
import urllib.request

from .common import PACKAGE, fail
from .versions import is_prerelease, version_key

PYPI_JSON = f"https://pypi.org/pypi/{PACKAGE}/json"


def newest_prerelease(pypi: dict) -> str:
    """The newest pre-release in PyPI's JSON of a project that has a file not yanked."""
    candidates = [version for version, files in pypi.get("releases", {}).items()
                  if is_prerelease(version) and any(not f.get("yanked") for f in files)]
    if not candidates:
        raise ValueError(f"no pre-release with files in PyPI's answer for {pypi.get('info', {}).get('name')}")
    return max(candidates, key=version_key)


def newest_version() -> str:
    pinned = os.environ.get("FLOWER_NEXT", "").strip()
    if pinned:
        return pinned
    request = urllib.request.Request(PYPI_JSON, headers={"Accept": "application/json",
                                                         "User-Agent": "flowerdock-flower-next"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return newest_prerelease(json.load(answer))
    except (OSError, ValueError) as error:
        fail(f"cannot tell the newest {PACKAGE} from {PYPI_JSON} ({error}): FLOWER_NEXT=<version> pins one")
