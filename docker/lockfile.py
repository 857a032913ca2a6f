"""The lock files of locks/ (made by scripts/lock.py, `make lock`), read the same way by the
lock maker, the image build (check_requirements.py, package_list.py) and the tests.

One line per distribution, what pip's `--require-hashes --no-deps -r` takes, plus the file's name:

    name==version --hash=sha256:HEX  # file.whl
    name @ file:///path/file.whl --hash=sha256:HEX  # file.whl      (a wheel built here)

and one comment line `# roots: REQ ...`: the requirements the set was resolved for.
"""

from __future__ import annotations

import re
from pathlib import Path

ENTRY = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9-]*)(?:==(?P<version>\S+)| @ (?P<url>file:///\S+))"
    r" --hash=sha256:(?P<sha256>[0-9a-f]{64})  # (?P<file>\S+\.whl)$")
ROOTS = "# roots:"


def canonical(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_line(name: str, version: str, sha256: str, file: str) -> str:
    return f"{canonical(name)}=={version} --hash=sha256:{sha256}  # {file}"


def read(path: str | Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """(entries by canonical name, roots) of one lock file; a malformed line is an error."""
    entries: dict[str, dict[str, str]] = {}
    roots: list[str] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.startswith(ROOTS):
            roots = line[len(ROOTS):].split()
        elif line.startswith("#") or not line.strip():
            continue
        elif match := ENTRY.match(line):
            entry = match.groupdict()
            if entry["version"] is None:  # a wheel's name says its version: name-version-...
                entry["version"] = entry["file"].split("-")[1]
            if entry["name"] in entries:
                raise ValueError(f"{path}:{number}: {entry['name']} is listed twice")
            entries[entry["name"]] = entry
        else:
            raise ValueError(f"{path}:{number}: not `name==version --hash=sha256:HEX  # file.whl`: {line!r}")
    return entries, roots
