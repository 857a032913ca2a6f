"""After an install from a lock (pip-install, with --no-deps): every requirement is met, what
`pip check` does, for what pip installed, plus the lock's roots with their extras (pip check
skips extras: flwr[simulation]'s Ray). A dependency the lock left out fails the image build here,
not a container at run time.

    python3 check_requirements.py PIP_WHEEL LOCK

Debian's own Python packages (torch and numpy in the cpu images, with what they need) are
dpkg's to keep whole: their requirements are not checked here, while what pip installed is
checked against them (flwr's numpy range against Debian's numpy). REQUIREMENTS_NOT_CHECKED
(names, space-separated) skips the requirements of a distribution installed for a part of it
that needs none of them: the superlink image's logging hook (structlog only) in the project's wheel.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from lockfile import canonical, read

DEBIAN_SITE = Path("/usr/lib/python3/dist-packages")
# The project's own pins are PyPI's torch and numpy (the host, TORCH=cuda); in the cpu images
# Debian's builds stand in for both, on purpose (docs/building.md).
STAND_INS = {("flowerdock", "torch"), ("flowerdock", "numpy")}


def packaging(pip_wheel: str):
    """pip's copy of `packaging` (the images have no other), then pip off sys.path again: it must
    not count as installed."""
    sys.path.insert(0, pip_wheel)
    from pip._vendor.packaging.requirements import Requirement
    sys.path.remove(pip_wheel)
    return Requirement


def location(dist: metadata.Distribution) -> Path:
    return Path(dist.locate_file(""))


def unmet(requirement, extra: str, requirer: str) -> str | None:
    """Why requirement (of requirer, asked with extra) is not met here, or None."""
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
        return None
    try:
        dist = metadata.distribution(requirement.name)  # the one Python imports: first on sys.path
    except metadata.PackageNotFoundError:
        return f"{requirer} requires {requirement}, which is not installed"
    if requirement.specifier.contains(dist.version, prereleases=True):
        return None
    if (requirer, canonical(requirement.name)) in STAND_INS and location(dist) == DEBIAN_SITE:
        return None
    return f"{requirer} requires {requirement}, and {dist.metadata['Name']} {dist.version} is installed"


def problems(Requirement, lock: str) -> list[str]:
    entries, roots = read(lock)
    not_checked = {canonical(name) for name in os.environ.get("REQUIREMENTS_NOT_CHECKED", "").split()}
    found = []
    for name, entry in entries.items():  # what Python imports is what pip installed from the lock
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found.append(f"{name} {entry['version']} is locked, and not installed")
            continue
        if dist.version != entry["version"] or (dist.read_text("INSTALLER") or "").strip() != "pip":
            found.append(f"{name} {entry['version']} is locked, and Python imports {dist.version} from {location(dist)}")
    asked = []  # (requirement, the extra it is asked with, by whom)
    for root in map(Requirement, roots):
        asked.append((root, "", "the lock"))
        try:  # what the root's extras bring must be met too
            asked += [(Requirement(text), extra, canonical(root.name))
                      for text in metadata.distribution(root.name).requires or [] for extra in root.extras]
        except metadata.PackageNotFoundError:
            pass  # said above
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if (dist.read_text("INSTALLER") or "").strip() == "pip" and name not in not_checked:
            asked += [(Requirement(text), "", name) for text in dist.requires or []]
    found += [why for requirement, extra, requirer in asked
              if (why := unmet(requirement, extra, requirer)) is not None]
    return sorted(set(found))


def main() -> int:
    pip_wheel, lock = sys.argv[1:]
    found = problems(packaging(pip_wheel), lock)
    for line in found:
        print(f"check_requirements: {lock}: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
