"""Writes what this image holds, for a site's audit, at the end of its build, from what is
installed (dpkg's database, Python's distributions), not from the locks:

    python3 package_list.py [LOCK ...]      -> /usr/share/flowerdock/packages.json

  debian: every Debian package: name, version, architecture;
  python: every Python distribution on the path: name, version, where it is (path), whether it
          is the one Python imports (active: a venv's copy shadows Debian's), and who installed
          it: pip (the sha256 and file name of the wheel it came from, as the LOCKs give them:
          pip installed each checked against that hash) or debian (the Debian package).

A distribution pip installed that no LOCK names at its version, or one neither pip nor dpkg
installed, fails the build: the list would not tell the whole truth.

Read it: docker run --rm --entrypoint cat IMAGE /usr/share/flowerdock/packages.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lockfile import canonical, read

OUT = Path("/usr/share/flowerdock/packages.json")


def debian_packages() -> list[dict[str, str]]:
    out = subprocess.run(["dpkg-query", "--show", "--showformat",
                          "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return sorted(({"name": name, "version": version, "architecture": arch}
                   for status, name, version, arch in rows if status.strip() == "ii"),
                  key=lambda package: package["name"])


def owners(paths: list[str]) -> dict[str, str]:
    """The Debian package each path belongs to (dpkg-query -S)."""
    if not paths:
        return {}
    out = subprocess.run(["dpkg-query", "--search", *paths], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        found[path] = package.split(",")[0].split(":")[0]  # "python3-x:amd64" -> "python3-x"
    return found


def python_distributions(locked: dict[tuple[str, str], dict[str, str]]) -> tuple[list[dict], list[str]]:
    dists = list(metadata.distributions())
    info_dirs = {id(dist): str(getattr(dist, "_path", "")) for dist in dists}
    debian = owners([path for path in info_dirs.values() if path.startswith("/usr/")])
    rows, problems, seen = [], [], set()
    for dist in dists:  # in sys.path order: the first of a name is the one imported
        name, version = canonical(dist.metadata["Name"]), dist.version
        row = {"name": name, "version": version, "path": str(dist.locate_file("")), "active": name not in seen}
        seen.add(name)
        info_dir = info_dirs[id(dist)]
        if (dist.read_text("INSTALLER") or "").strip() == "pip" and not info_dir.startswith("/usr/"):
            entry = locked.get((name, version))
            if entry is None:
                problems.append(f"{name} {version} was installed by pip and is in no lock given")
            else:
                row.update(installer="pip", sha256=entry["sha256"], file=entry["file"])
        elif info_dir in debian:
            row.update(installer="debian", debian_package=debian[info_dir])
        else:
            problems.append(f"{name} {version} ({info_dir}) was installed by neither pip nor dpkg")
        rows.append(row)
    return sorted(rows, key=lambda row: (row["name"], not row["active"])), problems


def main() -> int:
    locked = {}
    for lock in sys.argv[1:]:
        for name, entry in read(lock)[0].items():
            locked[(name, entry["version"])] = entry
    python, problems = python_distributions(locked)
    for problem in problems:
        print(f"package_list: {problem}", file=sys.stderr)
    if problems:
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"debian": debian_packages(), "python": python}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
