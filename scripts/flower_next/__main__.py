"""The fast tests and `make simulation` against Flower's newest pre-release (`make flower-next`).

Why: a Flower release may move what the project relies on (docs/flower-upgrades.md). Trying the
next one before it is out says what the upgrade will cost, while the pin stays on the release.

What it does, with the standard library only:

  1. finds the newest pre-release of `flwr-nightly` on PyPI (FLOWER_NEXT=<version> pins one);
  2. builds or refreshes the venv .venv-flower-next: everything of the host's .venv as locked,
     but Flower, which is flwr-nightly. Nothing already in .venv is downloaded again (torch is
     several GB): the new venv sees .venv's site-packages through `host-site-packages/`, one
     symlink per entry there but Flower's own (`flwr/`, `flwr-*.dist-info`), added to sys.path
     after the new venv's own site-packages by a .pth file. What flwr-nightly needs and .venv
     lacks (its Requires-Dist, with the `simulation` extra the project installs) is installed
     into the new venv, and shadows .venv's copy;
  3. says which entries of flowerdock_logging/flower_internals.py the nightly fails;
  4. runs the fast tests (`make test-fast`'s command) with the new venv's python;
  5. runs `make simulation BIN=.venv-flower-next/bin`, with a Flower home and ports of its own,
     so that neither reuses a local SuperLink of the pinned Flower;

and prints a one-line verdict per step; it exits 1 if the tests or the simulation fail, 2 if the
venv cannot be made.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from email.parser import HeaderParser
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
HOST_VENV = ROOT / ".venv"
NEXT_VENV = ROOT / ".venv-flower-next"
VIEW = "host-site-packages"  # in NEXT_VENV: .venv's site-packages, Flower left out
PTH = "flowerdock_host_venv.pth"
PACKAGE = "flwr-nightly"
PYPI_JSON = f"https://pypi.org/pypi/{PACKAGE}/json"
EXTRAS = ("simulation",)  # the project installs flwr[simulation]
HIDDEN = re.compile(r"^flwr(-[^-]+\.dist-info)?$")  # the pinned Flower's package and metadata in .venv
FAST_TESTS = ["-m", "pytest", "-q", "-m", "not simulation and not docker and not network"]
# The nightly's local SuperLink: not Flower's default ports, which `make simulation` and
# tests/test_simulation.py use with the pinned Flower.
PORTS = {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "39291", "FLWR_LOCAL_CONTROL_API_PORT": "39293"}

_VERSION = re.compile(
    r"^(?:(\d+)!)?(\d+(?:\.\d+)*)"
    r"(?:[._-]?(a|b|rc|c|alpha|beta|pre|preview)[._-]?(\d*))?"
    r"(?:[._-]?(?:post|rev|r)[._-]?(\d*)|-(\d+))?"
    r"(?:[._-]?dev[._-]?(\d*))?(?:\+[a-z0-9._-]+)?$")
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*\(?([^;()]*?)\)?\s*(?:;\s*(.*))?$")
_CLAUSE = re.compile(r"""([a-z_]+)\s*(===|==|!=|<=|>=|~=|<|>|not\s+in|in)\s*(['"])(.*?)\3""")
_BOOLEANS = re.compile(r"(?:\s|\(|\)|True|False|and|or)*")
_SPEC = re.compile(r"^\s*(===|==|!=|<=|>=|~=|<|>)\s*([^\s]+)\s*$")


# --- pure logic (tests/test_flower_next.py) --------------------------------------------------------

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


def newest_prerelease(pypi: dict) -> str:
    """The newest pre-release in PyPI's JSON of a project that has a file not yanked."""
    candidates = [version for version, files in pypi.get("releases", {}).items()
                  if is_prerelease(version) and any(not f.get("yanked") for f in files)]
    if not candidates:
        raise ValueError(f"no pre-release with files in PyPI's answer for {pypi.get('info', {}).get('name')}")
    return max(candidates, key=version_key)


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


def fail(reason: str) -> None:
    print(f"flower_next: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], cwd=ROOT, **kwargs)


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


# --- the steps -----------------------------------------------------------------------------------

def internals() -> str:
    """Which entries of flowerdock_logging/flower_internals.py the nightly fails."""
    code = ("from flowerdock_logging.flower_internals import check\n"
            "for line in check(): print('  - ' + line)")
    result = run(NEXT_VENV / "bin" / "python", "-c", code, capture_output=True, text=True)
    print(result.stdout + result.stderr[-3000:], end="", flush=True)
    failing = sum(line.startswith("  - ") for line in result.stdout.splitlines())
    if result.returncode:
        return "could not run the check"
    return f"{failing} entr{'y' if failing == 1 else 'ies'} fail" if failing else "every entry holds"


def fast_tests(env: dict[str, str]) -> tuple[bool, str]:
    """The fast tests, streamed; the verdict is pytest's last line."""
    command = [str(NEXT_VENV / "bin" / "python"), *FAST_TESTS]
    print("+", " ".join(command), flush=True)
    last = ""
    with subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
    return process.returncode == 0, last


def simulation(env: dict[str, str]) -> tuple[bool, str]:
    """`make simulation` on the nightly: its own Flower home and ports; its SuperLink stopped after."""
    home = NEXT_VENV / "flwr-home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    env = {**PORTS, **env, "FLWR_HOME": str(home), "APP_OUTPUT_DIR": str(NEXT_VENV / "outputs")}
    # -o: the target that called this made .venv already; this make must not remake it.
    make = ["make", "--no-print-directory", "-o", f"{HOST_VENV.name}/.installed",
            f"BIN={NEXT_VENV.name}/bin"]
    try:
        result = run(*make, "simulation", env=env)
        superlink = nightly_superlink(home)
    finally:
        run(*make, "simulation-stop", env=env)
    return result.returncode == 0, f"its SuperLink: {superlink or 'not found'}"


def nightly_superlink(home: Path) -> str:
    """The command line of the local SuperLink this run used, to show it is the nightly's."""
    marker = str(home.resolve() / "local-superlink") + "/"
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in line and marker in line:
            return " ".join(line.split()[:2])
    return ""


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


def timed(step, *args):
    started = time.monotonic()
    outcome = step(*args)
    return outcome, time.monotonic() - started


def main() -> int:
    started = time.monotonic()
    version = newest_version()
    print(f"flower_next: {PACKAGE} {version}" + (" (FLOWER_NEXT)" if os.environ.get("FLOWER_NEXT") else
                                                  " (the newest pre-release on PyPI)"), flush=True)
    build_venv(version)
    check_flower(version)
    check_pip()
    env = {**os.environ, "PATH": f"{NEXT_VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    found = internals()
    (tests_ok, tests_line), tests_s = timed(fast_tests, env)
    (sim_ok, sim_line), sim_s = timed(simulation, env)
    print(f"\nflower_next: {PACKAGE} {version}, {time.monotonic() - started:.0f} s in all")
    print(f"  flower internals: {found}")
    print(f"  fast tests:       {'PASSED' if tests_ok else 'FAILED'} ({tests_line}; {tests_s:.0f} s)")
    print(f"  make simulation:  {'PASSED' if sim_ok else 'FAILED'} ({sim_line}; {sim_s:.0f} s)", flush=True)
    return 0 if tests_ok and sim_ok else 1


if __name__ == "__main__":
    sys.exit(main())
