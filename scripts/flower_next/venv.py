"""The venv .venv-flower-next: .venv's site-packages seen through a view that leaves the pinned
Flower out, flwr-nightly and what it needs that .venv lacks installed into the venv itself, then
`import flwr` and `pip check` looked at (docs/flower-upgrades.md#trying-flowers-next-release)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from email.parser import HeaderParser
from pathlib import Path

from .common import PACKAGE, ROOT, fail, run
from .requirements import canonical, marker_environment, requires_dist, unmet

HOST_VENV = ROOT / ".venv"
NEXT_VENV = ROOT / ".venv-flower-next"
VIEW = "host-site-packages"  # in NEXT_VENV: .venv's site-packages, Flower left out
PTH = "flowerdock_host_venv.pth"
EXTRAS = ("simulation",)  # the project installs flwr[simulation]
HIDDEN = re.compile(r"^flwr(-[^-]+\.dist-info)?$")  # the pinned Flower's package and metadata in .venv


# --- pure logic (tests/test_flower_next.py) --------------------------------------------------------

def pth_line(view: str = VIEW) -> str:
    """The .pth line: .venv's site-packages (the view) after the new venv's own, its .pth files run
    (the project's editable install, the JSON-logging hook). sys.prefix is the new venv."""
    return f"import os, site, sys; site.addsitedir(os.path.join(sys.prefix, {view!r}))\n"


def hidden(entry: str) -> bool:
    """The pinned Flower's own entries of .venv's site-packages, which the view leaves out."""
    return bool(HIDDEN.match(entry))


def expected_pip_check_line(line: str) -> bool:
    """A `pip check` line about a requirement on `flwr`, which flwr-nightly meets under another name."""
    return bool(re.search(r"\b(requires|has requirement) flwr(\[[^\]]*\])?([<>=!~,. 0-9a-z]*)?(, which| but)", line))


# --- the venv ------------------------------------------------------------------------------------

def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def pip(*args: str, **kwargs) -> subprocess.CompletedProcess:
    # .venv's pip, run by the new venv's python: it installs into the new venv (sys.prefix).
    return run(NEXT_VENV / "bin" / "python", "-m", "pip", *args, **kwargs)


def stamp(version: str) -> str:
    lock = hashlib.sha256((ROOT / "locks" / "host.txt").read_bytes()).hexdigest()
    return f"{PACKAGE}=={version}\nlocks/host.txt sha256 {lock}\n"


def make_view() -> None:
    """host-site-packages/: a relative symlink per entry of .venv's site-packages but Flower's."""
    view, host = NEXT_VENV / VIEW, site_packages(HOST_VENV)
    if view.exists():
        for entry in view.iterdir():  # symlinks only: the host's files are never touched
            entry.unlink()
    view.mkdir(exist_ok=True)
    for entry in sorted(host.iterdir()):
        if not hidden(entry.name):
            (view / entry.name).symlink_to(os.path.relpath(entry, view))


def installed_versions() -> dict[str, str]:
    """Every distribution the new venv's python sees: its own, then the view's (the first wins)."""
    versions: dict[str, str] = {}
    for directory in (site_packages(NEXT_VENV), NEXT_VENV / VIEW):
        for info in sorted(directory.glob("*.dist-info")):
            meta = HeaderParser().parsestr((info / "METADATA").read_text(errors="replace"))
            versions.setdefault(canonical(meta["Name"] or ""), meta["Version"] or "")
    return versions


def own_requirements() -> dict[str, list[str]]:
    """Each distribution installed into the new venv itself (not the view's): its Requires-Dist."""
    found = {}
    for info in sorted(site_packages(NEXT_VENV).glob("*.dist-info")):
        metadata = (info / "METADATA").read_text(errors="replace")
        found[canonical(HeaderParser().parsestr(metadata)["Name"] or "")] = requires_dist(metadata)
    return found


def install_missing(environment: dict[str, str]) -> list[str]:
    """What the nightly (and what that brings) needs and the view lacks, installed without deps.

    --ignore-installed: pip never uninstalls the view's copy (its files are .venv's, behind symlinks);
    the new copy lands in the new venv's own site-packages, which comes first on sys.path.
    """
    added: list[str] = []
    extras: dict[str, tuple[str, ...]] = {PACKAGE: EXTRAS}  # the extras asked of each distribution
    for _ in range(5):  # what a new dependency needs in turn
        installed, missing = installed_versions(), {}
        for name, lines in own_requirements().items():
            for requirement in unmet(lines, installed, environment, extras.get(name, ())):
                missing[requirement.name] = requirement.text
                extras[requirement.name] = requirement.extras
        if not missing:
            return added
        if pip("install", "--quiet", "--no-deps", "--ignore-installed", *missing.values()).returncode:
            fail(f"could not install {', '.join(missing.values())}")
        added += missing.values()
    fail(f"dependencies still unmet after 5 rounds: {', '.join(missing.values())}")


def build_venv(version: str) -> None:
    """A fresh venv for a new version or a new host lock; the view and dependencies refreshed always."""
    if not (HOST_VENV / "bin" / "python").exists():
        fail("no .venv: run make install first")
    marker = NEXT_VENV / ".flower-next"
    fresh = not marker.exists() or marker.read_text() != stamp(version)
    if fresh:
        shutil.rmtree(NEXT_VENV, ignore_errors=True)  # unlinks the view's symlinks, never follows them
        run(sys.executable, "-m", "venv", "--without-pip", NEXT_VENV, check=True)
    make_view()
    (site_packages(NEXT_VENV) / PTH).write_text(pth_line())
    if fresh and pip("install", "--quiet", "--no-deps", f"{PACKAGE}=={version}").returncode:
        fail(f"could not install {PACKAGE}=={version}")
    added = install_missing(marker_environment())
    print(f"flower_next: {PACKAGE} {version} in {NEXT_VENV.name}; "
          f"added for it: {', '.join(added) or 'nothing new'}", flush=True)
    marker.write_text(stamp(version))


def check_pip() -> None:
    """pip check, knowing what it cannot know.

    flwr-nightly is Flower under another distribution name, so a requirement on `flwr` (the
    project's own, `flowerdock`: installed editable in .venv by `make install`, seen here through the
    view; anything else that names `flwr`) is reported unmet although the nightly meets it. Those
    lines are expected and shown as such; any other line is a real inconsistency, shown as a warning
    (the tests then say whether it matters).
    """
    result = pip("check", capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    other = [line for line in lines if not expected_pip_check_line(line)]
    print(f"flower_next: pip check: {len(lines) - len(other)} line(s) about `flwr` (expected: the nightly is "
          f"`{PACKAGE}`)" + "".join(f"\n  WARNING {line}" for line in other), flush=True)


def check_flower(version: str) -> None:
    """`import flwr` must be the nightly's, from the new venv's own site-packages; and the version
    Flower reports of itself the nightly's (with .venv's flwr metadata in view, it would say 1.42)."""
    code = "import importlib.util, flwr; print(importlib.util.find_spec('flwr').origin, flwr.__version__)"
    result = run(NEXT_VENV / "bin" / "python", "-c", code, capture_output=True, text=True)
    found = result.stdout.split()
    print(f"flower_next: import flwr -> {' '.join(found) or result.stderr[-2000:]}", flush=True)
    own = str(site_packages(NEXT_VENV) / "flwr") + os.sep
    if result.returncode or len(found) != 2 or not found[0].startswith(own) or found[1] != version:
        fail(f"the new venv's flwr is not {PACKAGE} {version} from {own}")
