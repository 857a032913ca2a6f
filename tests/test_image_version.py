"""The images' tag is the project's version, stated once in pyproject.toml: every compose file's
default (`${FLOWERDOCK_VERSION:-...}`), the one-host .env, the certificate script's image and the
Makefile (which exports it to `make images`) say the same, so a version bump cannot leave one
machine's compose file running the old images."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT, VERSION

DEFAULT = re.compile(r"\$\{FLOWERDOCK_VERSION:-([^}]*)\}")


def tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split()


def test_every_compose_default_and_script_default_is_the_projects_version():
    found = {path: set(DEFAULT.findall((ROOT / path).read_text()))
             for path in tracked("*.yaml", "*.yml", "*.sh", "Makefile") if (ROOT / path).is_file()}
    found = {path: versions for path, versions in found.items() if versions}
    assert len(found) >= 8, found  # compose.yaml, docker/compose.*.yaml, certs/make-certs.sh
    assert {path: versions for path, versions in found.items() if versions != {VERSION}} == {}


def test_the_one_host_env_file_and_make_say_the_same():
    assert re.search(r"^FLOWERDOCK_VERSION=(.*)$", (ROOT / ".env").read_text(), re.M).group(1) == VERSION
    printed = subprocess.run(["make", "--no-print-directory", "-s", "print-version"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert printed == VERSION
