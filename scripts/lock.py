"""Makes the lock files in locks/ (`make lock`): every distribution the host's .venv and the
images install, with its exact version and the sha256 of the one file pip installs, from
pyproject.toml (what each set needs) and constraints.txt (every version).

    python3 scripts/lock.py           rewrite the locks that changed, say which
    python3 scripts/lock.py --check   exit 1 if a lock is not what pyproject.toml and
                                      constraints.txt make now (nothing written)

pip resolves each set for its target (`pip install --dry-run --report`, with the target's
platform options) from the index's metadata alone: the CUDA wheels (GBs) are not downloaded.
pip evaluates environment markers for the Python that runs it, not for the target, so each
set's closure is walked again here with the target's markers: what only the running Python
needs is left out; what only the target needs is added to the set and resolved again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
BUILD = ROOT / "build" / "lock"  # the pip that resolves
sys.path.insert(0, str(ROOT / "docker"))
from lockfile import ROOTS, canonical, entry_line, read  # noqa: E402

try:
    from packaging.requirements import Requirement
except ImportError:  # any Python with pip has it
    from pip._vendor.packaging.requirements import Requirement


@dataclass(frozen=True)
class Target:
    """A Python and platform a set is installed on."""

    python: str        # X.Y
    full_version: str  # for the rare marker that asks
    glibc: int         # newest manylinux_2_N the platform runs
    what: str

    def pip_options(self) -> list[str]:
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python,
                   "--abi", "cp" + self.python.replace(".", "")]
        platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(self.glibc, 4, -1)]
        platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
        return options + [arg for platform in platforms for arg in ("--platform", platform)]

    def markers(self) -> dict[str, str]:
        return {"implementation_name": "cpython", "implementation_version": self.full_version,
                "os_name": "posix", "platform_machine": "x86_64", "platform_python_implementation": "CPython",
                "platform_release": "", "platform_system": "Linux", "platform_version": "",
                "python_full_version": self.full_version, "python_version": self.python, "sys_platform": "linux"}


# The images: Debian trixie's CPython 3.13 and glibc 2.41. The host: CPython 3.11 on Linux
# x86_64 with glibc 2.36 or newer (Debian 12, this project's CI).
IMAGES = Target("3.13", "3.13.5", 41, "CPython 3.13, manylinux x86_64 (Debian trixie)")
HOST = Target("3.11", "3.11.7", 36, "CPython 3.11, manylinux x86_64 up to glibc 2.36")


@dataclass(frozen=True)
class LockSet:
    file: str
    target: Target
    roots: tuple[str, ...]
    use: str
    debian_provides: tuple[str, ...] = ()  # resolved with, then left to Debian's packages
    # The locks of the image stages below this one: what they install is left out here, so each
    # stage installs its own files alone (pip-install --ignore-installed: no file twice in layers).
    after: tuple[str, ...] = ()


def lock_sets() -> list[LockSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps, extras = project["dependencies"], project["optional-dependencies"]
    named = {canonical(Requirement(req).name): req for req in deps}
    no_torch = tuple(req for req in deps if canonical(Requirement(req).name) != "torch")
    simulation = tuple(extras["simulation"])
    # Debian's torch (TORCH=cpu) goes with Debian's numpy, the one it was built with.
    cpu = ("numpy",)
    return [
        # hatchling builds the editable install with editables (the .pth of force-include).
        LockSet("host.txt", HOST, (*deps, *(req for extra in sorted(extras) for req in extras[extra]),
                                   "editables", "hatchling", "pip"),
                "the host's .venv (make install): the project's dependencies and extras, pip, "
                "and the build backend for its editable install"),
        LockSet("cli.txt", HOST, (named["flwr"], "pip"),
                "the flwr CLI alone (make cli: .venv-cli), for a machine that only submits runs"),
        LockSet("build.txt", HOST, ("hatchling", "pip"),
                "pip (runs from its wheel in every image build) and the build backend of the "
                "project's own wheel (docker/wheelhouse.sh); pure Python, any CPython"),
        LockSet("image-flower.txt", IMAGES, (named["flwr"], named["structlog"]),
                "the superlink image: Flower and structlog"),
        LockSet("image-app-cpu.txt", IMAGES, no_torch,
                "the supernode and serverapp images, TORCH=cpu (torch and numpy: Debian's)", cpu),
        LockSet("image-app-cuda.txt", IMAGES, no_torch,
                "the supernode and serverapp images, TORCH=cuda", after=("image-torch-cuda.txt",)),
        LockSet("image-simulation-cpu.txt", IMAGES, simulation,
                "the simulation image (Ray), TORCH=cpu (numpy: Debian's)", cpu, after=("image-app-cpu.txt",)),
        LockSet("image-simulation-cuda.txt", IMAGES, simulation, "the simulation image (Ray), TORCH=cuda",
                after=("image-app-cuda.txt", "image-torch-cuda.txt")),
        LockSet("image-torch-cuda.txt", IMAGES, (named["torch"],),
                "PyPI's torch and its CUDA libraries (TORCH=cuda only: build/wheelhouse-cuda)"),
    ]


def pinned(name: str) -> str:
    """The version constraints.txt pins name to."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and canonical(line.split("==")[0]) == name:
            return line.split("==")[1].strip()
    sys.exit(f"lock: constraints.txt pins no {name}")


def lock_pip() -> list[str]:
    """The pip that resolves: the version constraints.txt pins, run from its wheel as in the image
    builds (the Python that runs this may have an older one); checked against the last lock's hash."""
    version = pinned("pip")
    wheel = BUILD / f"pip-{version}-py3-none-any.whl"
    if not wheel.exists():
        last = read(LOCKS / "build.txt")[0].get("pip", {}) if (LOCKS / "build.txt").exists() else {}
        requirement = f"pip=={version}"
        if last.get("version") == version:
            requirement += f" --hash=sha256:{last['sha256']}"
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write(requirement + "\n")
            requirements.flush()
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--dest", str(BUILD), "--requirement", requirements.name], check=True)
    return [sys.executable, str(wheel / "pip")]


def pip_report(pip: list[str], target: Target, roots: list[str]) -> dict[str, dict]:
    """What pip would install for roots on target: {canonical name: report item}."""
    with tempfile.TemporaryDirectory() as scratch:  # --target: pip's condition for --platform
        command = [*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
                   "--target", scratch, *target.pip_options(),
                   "--constraint", str(ROOT / "constraints.txt"), *roots]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"lock: pip could not resolve {' '.join(roots)} for {target.what}:\n{result.stderr}")
    report = json.loads(result.stdout)
    return {canonical(item["metadata"]["name"]): item for item in report["install"]}


def needed(report: dict[str, dict], roots: tuple[str, ...], target: Target) -> tuple[set[str], set[str]]:
    """(names the target needs, from roots down, by the target's markers; those the report lacks)."""
    environment = target.markers()
    names, missing, walked = set(), set(), set()
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        item = report.get(name)
        if item is None:
            missing.add(name)
            continue
        version = item["metadata"]["version"]
        if not requirement.specifier.contains(version, prereleases=True):
            sys.exit(f"lock: {name} {version} does not meet {requirement} on {target.what}")
        names.add(name)
        for extra in {""} | {canonical(extra) for extra in requirement.extras}:
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for dependency in map(Requirement, item["metadata"].get("requires_dist", [])):
                if dependency.marker is None or dependency.marker.evaluate({**environment, "extra": extra}):
                    todo.append(dependency)
    return names, missing


def resolve(pip: list[str], target: Target, sets: list[LockSet]) -> dict[str, list[str]]:
    """Every set of one target from one resolve of all their roots (constraints.txt pins every
    version, so a set alone would get the same ones): {file: entry lines, sorted by name}."""
    roots = sorted({root for lock in sets for root in lock.roots})
    for _ in range(5):
        report = pip_report(pip, target, roots)
        closures = {lock.file: needed(report, lock.roots, target) for lock in sets}
        missing = set().union(*(missing for _, missing in closures.values()))
        if not missing:
            break
        roots += sorted(missing)  # needed on the target only: the running Python's markers hid them
    else:
        sys.exit(f"lock: {', '.join(sorted(missing))} still missing for {target.what} after five resolves")
    by_file = {lock.file: lock for lock in sets}

    def below(lock: LockSet) -> set[str]:  # what the stages under it install
        return set().union(*(closures[file][0] | below(by_file[file]) for file in lock.after))

    return {lock.file: [entry(report[name], lock.file)
                        for name in sorted(closures[lock.file][0] - set(lock.debian_provides) - below(lock))]
            for lock in sets}


def entry(item: dict, file: str) -> str:
    info = item["download_info"]
    sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
    wheel = unquote(Path(urlsplit(info["url"]).path).name)
    if not sha256 or not wheel.endswith(".whl"):
        sys.exit(f"lock: {file}: {item['metadata']['name']}: the index gave no wheel with a sha256 ({info['url']})")
    return entry_line(item["metadata"]["name"], item["metadata"]["version"], sha256, wheel)


def render(lock: LockSet, lines: list[str]) -> str:
    roots = sorted(r for r in lock.roots if canonical(Requirement(r).name) not in lock.debian_provides)
    after = [f"# Installed after {', '.join(lock.after)}: what that installs is not repeated here."] if lock.after else []
    return "\n".join([
        f"# locks/{lock.file}: {lock.use}.", *after,
        f"# For {lock.target.what}. Made by `make lock` (scripts/lock.py) from pyproject.toml and",
        "# constraints.txt: do not edit. Install: pip install --require-hashes --no-deps -r THIS_FILE",
        f"{ROOTS} {' '.join(roots)}",
        *lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing; exit 1 on a difference")
    args = parser.parse_args()
    sets = lock_sets()
    pip = lock_pip()
    targets = list(dict.fromkeys(lock.target for lock in sets))
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:  # one resolve each, side by side
        lines = {}
        for result in pool.map(lambda t: resolve(pip, t, [lock for lock in sets if lock.target == t]), targets):
            lines.update(result)
    texts = [render(lock, lines[lock.file]) for lock in sets]
    stale = []
    LOCKS.mkdir(exist_ok=True)
    for lock, text in zip(sets, texts):
        path = LOCKS / lock.file
        same = path.exists() and path.read_text() == text
        count = text.count("--hash=")
        if not same:
            stale.append(lock.file)
            if not args.check:
                path.write_text(text)
        state = "up to date" if same else ("differs" if args.check else "written")
        print(f"locks/{lock.file}: {count} distributions, {state}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
