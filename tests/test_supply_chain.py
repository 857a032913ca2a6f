"""The supply chain (docs/building.md): the locks pin and hash every file the venv and the images
install, and pip refuses any other; the build proves each set whole; each image's package list says
what it holds; no image layer, and no build context, holds a private key.

The unit tests install a few small wheels from build/wheelhouse (on a clean clone: fetched by their
hash first). The docker-marked ones read each image once and save all of them once."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT, sh

sys.path.insert(0, str(ROOT / "docker"))
import lockfile  # noqa: E402

_spec = importlib.util.spec_from_file_location("lock_maker", ROOT / "scripts" / "lock.py")
lock_maker = importlib.util.module_from_spec(_spec)
sys.modules["lock_maker"] = lock_maker  # dataclasses look their module up
_spec.loader.exec_module(lock_maker)

LOCKS = ROOT / "locks"


def entries(file: str) -> dict[str, dict[str, str]]:
    return lockfile.read(LOCKS / file)[0]


def constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {lockfile.canonical(line.split("==")[0]): line.split("==")[1].strip() for line in lines if "==" in line}


# --- the locks ---------------------------------------------------------------

def test_every_lock_line_is_pinned_and_hashed():
    assert sorted(p.name for p in LOCKS.glob("*.txt")) == sorted(s.file for s in lock_maker.lock_sets())
    for path in LOCKS.glob("*.txt"):
        locked, roots = lockfile.read(path)  # a line that is not `name==version --hash=...` raises
        assert locked and roots, path
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assert len(lines) == len(locked)
        for name, entry in locked.items():
            assert entry["version"] and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), (path.name, name)
            wheel_name, wheel_version = entry["file"].split("-")[:2]  # the file is the one of that release
            assert lockfile.canonical(wheel_name) == name and Version(wheel_version) == Version(entry["version"])


@pytest.mark.parametrize("line", ["flwr==1.42.0", "flwr>=1.42 --hash=sha256:" + "0" * 64 + "  # flwr-1.42.0-py3-none-any.whl",
                                  "flwr==1.42.0 --hash=md5:0123  # flwr-1.42.0-py3-none-any.whl"])
def test_a_line_without_a_pin_or_a_sha256_is_refused(tmp_path, line):
    (tmp_path / "lock.txt").write_text(f"# roots: flwr\n{line}\n")
    with pytest.raises(ValueError, match="not `name==version"):
        lockfile.read(tmp_path / "lock.txt")


def test_locks_agree_with_constraints():
    pins, locked = constraints(), set()
    for path in LOCKS.glob("*.txt"):
        for name, entry in lockfile.read(path)[0].items():
            assert pins.get(name) == entry["version"], \
                f"{path.name}: {name} {entry['version']}, constraints.txt: {pins.get(name)} (run make lock)"
            locked.add(name)
    assert locked == set(pins), "constraints.txt pins what no lock holds, or the reverse (make lock)"


def test_locks_agree_with_pyproject():
    for lock in lock_maker.lock_sets():
        locked, roots = lockfile.read(LOCKS / lock.file)
        wanted = sorted(r for r in lock.roots if lockfile.canonical(Requirement(r).name) not in lock.debian_provides)
        assert roots == wanted, f"{lock.file} was made from another pyproject.toml: make lock"
        whole = {name: e for file in (lock.file, *lock.after) for name, e in entries(file).items()}
        for root in map(Requirement, roots):
            assert root.specifier.contains(whole[lockfile.canonical(root.name)]["version"]), (lock.file, root)
        assert not set(lock.debian_provides) & set(locked)
        for below in lock.after:  # a stage installs its own files alone: none twice in the layers
            assert not set(locked) & set(entries(below)), (lock.file, below)
    # What each set is for: the cpu images take torch and numpy from Debian, the cuda ones from PyPI.
    assert not {"torch", "numpy"} & (set(entries("image-app-cpu.txt")) | set(entries("image-simulation-cpu.txt")))
    assert "numpy" in entries("image-app-cuda.txt") and "ray" in entries("image-simulation-cpu.txt")
    assert {"torch", "nvidia-cublas", "triton"} <= set(entries("image-torch-cuda.txt")) & set(entries("host.txt"))
    assert {"pytest", "matplotlib", "hatchling", "editables", "pip"} <= set(entries("host.txt"))
    assert all(e["file"].endswith("-none-any.whl") for e in entries("build.txt").values())  # any CPython


def test_make_constraints_keeps_every_pin_unless_told_to_upgrade():
    """A new dependency (docs/bring-your-own-model.md#a-new-dependency) must not move every other
    version: each pip install of `make constraints` is held to constraints.txt; UPGRADE=1 frees it."""
    def installs(*args: str) -> list[str]:
        recipe = subprocess.run(["make", "-n", "constraints", *args], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
        return [line for line in recipe.splitlines() if "pip install" in line]
    assert installs() and all("-c constraints.txt" in line for line in installs())
    assert installs("UPGRADE=1") and not any("-c constraints.txt" in line for line in installs("UPGRADE=1"))


def test_image_locks_agree_with_each_other():
    seen: dict[str, tuple[str, str]] = {}
    for path in sorted(LOCKS.glob("image-*.txt")) + [LOCKS / "build.txt"]:
        for name, entry in lockfile.read(path)[0].items():
            assert seen.setdefault(name, (entry["version"], entry["sha256"])) == (entry["version"], entry["sha256"]), \
                f"{path.name}: {name} differs from another image lock"


# --- pip against the locks: real runs on real wheels ---------------------------

@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    """pip's, markdown-it-py's and mdurl's wheels (pure Python) and their entries."""
    flower = entries("image-flower.txt")
    wanted = {"pip": entries("build.txt")["pip"], "markdown-it-py": flower["markdown-it-py"], "mdurl": flower["mdurl"]}
    folder = ROOT / "build" / "wheelhouse"
    if not all((folder / e["file"]).exists() for e in wanted.values()):  # a clean clone: fetch them, by hash
        folder = tmp_path_factory.mktemp("wheels")
        lock = folder / "lock.txt"
        lock.write_text("".join(line(e) + "\n" for e in wanted.values()))
        sh(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:",
           "--dest", str(folder), "--requirement", str(lock), timeout=300)
    return folder, wanted


def line(entry: dict[str, str]) -> str:
    return lockfile.entry_line(entry["name"], entry["version"], entry["sha256"], entry["file"])


def pip_install(lock_text: str, links: Path, target: Path) -> subprocess.CompletedProcess:
    """What docker/pip-install runs: the lock's files, each against its hash, and nothing else."""
    lock = target.with_suffix(".txt")
    lock.write_text(lock_text)
    return subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(links),
                           "--require-hashes", "--no-deps", "--target", str(target), "--requirement", str(lock)],
                          capture_output=True, text=True, timeout=120)


def test_pip_installs_a_locked_wheel_and_refuses_any_other(wheels, tmp_path):
    links, wanted = wheels
    mdurl = wanted["mdurl"]
    ok = pip_install(line(mdurl) + "\n", links, tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "mdurl").is_dir()

    # The lock names another file than the index (or a proxy) gives.
    other_hash = line(mdurl).replace(mdurl["sha256"], mdurl["sha256"][::-1])
    refused = pip_install(other_hash + "\n", links, tmp_path / "other-hash")
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr
    assert not (tmp_path / "other-hash" / "mdurl").exists()

    # The file was changed after it was locked: same name, other bytes.
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / mdurl["file"]).write_bytes((links / mdurl["file"]).read_bytes() + b"\0")
    refused = pip_install(line(mdurl) + "\n", swapped, tmp_path / "swapped-install")
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr

    # A line with no hash, or no pin: in hash-checking mode pip takes nothing on trust.
    markdown = wanted["markdown-it-py"]
    refused = pip_install(f"{line(mdurl)}\nmarkdown-it-py=={markdown['version']}\n", links, tmp_path / "no-hash")
    assert refused.returncode != 0 and "Hashes are required" in refused.stderr
    refused = pip_install(f"{line(mdurl)}\nmarkdown-it-py\n", links, tmp_path / "no-pin")
    assert refused.returncode != 0 and "must have their versions pinned" in refused.stderr


def test_a_dependency_the_lock_lacks_fails_the_check(wheels, tmp_path):
    """docker/check_requirements.py, as pip-install runs it after each install."""
    links, wanted = wheels
    pip_wheel = links / wanted["pip"]["file"]

    def check(*names: str) -> subprocess.CompletedProcess:
        target = tmp_path / "-".join(names)
        text = "# roots: markdown-it-py\n" + "".join(line(wanted[name]) + "\n" for name in names)
        assert pip_install(text, links, target).returncode == 0
        # -S: this environment's own site-packages (where mdurl is) out of sight; only the target.
        return subprocess.run([sys.executable, "-S", str(ROOT / "docker" / "check_requirements.py"), str(pip_wheel),
                               str(target.with_suffix(".txt"))], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(target)})

    missing = check("markdown-it-py")
    assert missing.returncode == 1
    assert "markdown-it-py requires mdurl~=0.1, which is not installed" in missing.stderr
    whole = check("markdown-it-py", "mdurl")
    assert whole.returncode == 0, whole.stderr


# --- what the build files say ---------------------------------------------------

def test_every_pip_install_of_the_images_is_from_a_lock():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    locks = re.findall(r"/usr/local/lib/flowerdock/pip-install (\S+)", dockerfile)
    assert len(locks) >= 6
    for lock in locks:
        for torch in ("cpu", "cuda"):
            path = lock.replace("$TORCH", torch)
            assert path == "/app-wheel/lock.txt" or (
                path.startswith("/wheels/locks/") and (LOCKS / path.removeprefix("/wheels/locks/")).exists()), lock
    assert not re.search(r"\bpip3? install\b|-m pip\b", dockerfile)  # no other way in
    script = (ROOT / "docker" / "pip-install").read_text()
    for flag in ("--require-hashes", "--no-deps", "--no-index", "sha256sum --check", "check_requirements.py"):
        assert flag in script
    assert dockerfile.count("package_list.py") >= 6  # every final image lists what it holds


def test_nothing_turns_apt_or_debootstrap_signature_checks_off():
    files = [p for p in (ROOT / "docker").rglob("*") if p.is_file()] + [ROOT / "Makefile"]
    for path in files:
        text = path.read_text(errors="replace")
        for switch in ("--allow-unauthenticated", "trusted=yes", "AllowInsecureRepositories",
                       "AllowUnauthenticated", "AllowDowngradeToInsecureRepositories", "--no-check-gpg"):
            assert switch not in text, f"{path.relative_to(ROOT)} turns a signature check off: {switch}"
    base = (ROOT / "docker" / "base" / "build.sh").read_text()
    assert "--force-check-gpg" in base and '--keyring="$keyring"' in base


# The certificate maker as the build context may hold it: the command line, then each module of
# certlib/ (make_certs.py imports them all), never a cache or a key.
CERT_MAKER = ["certs/make_certs.py",
              *sorted(f"certs/certlib/{p.name}" for p in (ROOT / "certs/certlib").glob("*.py"))]


def test_the_build_context_is_an_allow_list_that_leaves_keys_out():
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"  # everything out, then what the build needs
    allowed = [r.removeprefix("!") for r in rules[1:]]
    assert all(r.startswith("!") for r in rules[1:])
    # The certificate maker, file by file, and all of it (the image runs it): never a folder, as
    # certs/out/ holds the CA key.
    assert [r for r in allowed if r.startswith("certs")] == CERT_MAKER
    assert not [r for r in allowed if "*" in r or r.startswith((".", "sites", "outputs"))]


# --- the images (Docker) ---------------------------------------------------------

def setting(name: str) -> str:
    env = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines() if "=" in line and line[0] != "#")
    return os.environ.get(name) or env[name]


def images_and_locks() -> dict[str, tuple[str, list[str]]]:
    """Each image of this checkout, and the locks it installs from."""
    version, torch = setting("FLOWERDOCK_VERSION"), setting("TORCH")
    app = [f"image-app-{torch}.txt"] + (["image-torch-cuda.txt"] if torch == "cuda" else [])
    return {"superlink": (f"flowerdock/superlink:{version}", ["image-flower.txt"]),
            "supernode": (f"flowerdock/supernode:{version}-{torch}", app),
            "serverapp": (f"flowerdock/serverapp:{version}-{torch}", app),
            "simulation": (f"flowerdock/simulation:{version}-{torch}", [*app, f"image-simulation-{torch}.txt"]),
            "gateway": (f"flowerdock/gateway:{version}", []),
            "aggregator": (f"flowerdock/aggregator:{version}", [])}


PROBE = r"""cat /usr/share/flowerdock/packages.json; echo '=== dpkg'
dpkg-query --show --showformat '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n'; echo '=== python'
python3 -c 'import json, importlib.metadata as m; print(json.dumps([[d.metadata["Name"], d.version, str(d.locate_file(""))] for d in m.distributions()]))'
"""


@pytest.mark.docker
@pytest.mark.parametrize("target", list(images_and_locks()))
def test_each_package_list_is_what_its_image_holds(images, target):
    image, locks = images_and_locks()[target]
    out = sh("docker", "run", "--rm", "--user", "flwr", "--entrypoint", "sh", image, "-c", PROBE).stdout
    listed_text, rest = out.split("=== dpkg\n")
    dpkg_text, python_text = rest.split("=== python\n")
    listed = json.loads(listed_text)

    installed_debian = sorted([name, version, arch] for status, name, version, arch in
                              (row.split("\t") for row in dpkg_text.splitlines()) if status.strip() == "ii")
    assert sorted([p["name"], p["version"], p["architecture"]] for p in listed["debian"]) == installed_debian
    installed_python = sorted([lockfile.canonical(n), v, path] for n, v, path in json.loads(python_text))
    assert sorted([p["name"], p["version"], p["path"]] for p in listed["python"]) == installed_python

    locked = {}
    for lock in locks:
        locked.update(entries(lock))
    if target in ("superlink", "supernode", "serverapp", "simulation"):  # the project's wheel, as built here
        locked.update(lockfile.read(ROOT / "build" / "app-wheel" / "lock.txt")[0])
    from_pip = {p["name"]: p for p in listed["python"] if p["installer"] == "pip"}
    assert set(from_pip) == set(locked), "pip installed what the image's locks do not hold, or the reverse"
    for name, p in from_pip.items():
        assert (p["version"], p["sha256"], p["file"]) == (locked[name]["version"], locked[name]["sha256"],
                                                          locked[name]["file"]), name
        assert p["active"] and p["path"].startswith("/opt/venv/")
    debian = {p["debian_package"] for p in listed["python"] if p["installer"] == "debian"}
    assert debian <= {p["name"] for p in listed["debian"]}
    if target in ("supernode", "serverapp") and setting("TORCH") == "cpu":
        assert {"python3-torch", "python3-numpy"} <= debian


@pytest.mark.docker
def test_the_base_was_checked_against_debians_keys_and_apt_still_checks(images):
    registry_base = subprocess.run(["docker", "image", "inspect", setting("BASE_IMAGE")], capture_output=True)
    if registry_base.returncode != 0:  # built here from Debian packages (docker/base/build.sh)
        comment = sh("docker", "image", "inspect", "-f", "{{.Comment}}", "flowerdock/debian:trixie-python3").stdout
        assert "Release file checked against" in comment and "Valid Release signature (key id" in comment, comment
    image = images_and_locks()["gateway"][0]  # an image whose build ran apt-get
    out = sh("docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
             "apt-config dump; echo ===; cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null; "
             "dpkg-query -W debian-archive-keyring").stdout
    config, sources = out.split("===\n")
    for option in ("AllowInsecureRepositories", "AllowWeakRepositories", "AllowDowngradeToInsecureRepositories"):
        assert f'Acquire::{option} "0";' in config
    assert "AllowUnauthenticated" not in config and "trusted=yes" not in sources and "debian-archive-keyring" in sources


@pytest.fixture(scope="module")
def operator_keys(images):
    """A CA, a server key, a SuperNode key and the SuperExec secret, made where an operator's are
    (certs/out/), then the images built again (all cached: seconds): a build context or a COPY
    that took certs/ in would take these keys into a layer. Yields their needles (key_needles)."""
    out = ROOT / "certs" / "out"
    folder = out / f"supply-chain-test-{uuid.uuid4().hex[:8]}"
    try:
        sh(sys.executable, "certs/make_certs.py", "init", "--out", str(folder), "--nodes", "1", timeout=120)
        sh("docker/build-images.sh", timeout=3000)
        needles = key_needles(out)  # the operator's own keys too, where there are some
        assert {"ca.key", "superlink.key", "supernode.key", "superexec.secret"} <= {Path(n).name for n in needles.values()}
        yield needles
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # only what this made: the operator's stay
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def key_needles(folder: Path) -> dict[bytes, str]:
    """A piece of each private key and secret under folder, as its file has it: the middle line of
    its base64 body (the first lines of a format's keys are alike), the whole secret: {bytes: file}."""
    needles = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".key", ".secret"):
            body = [l.strip() for l in path.read_bytes().splitlines() if l.strip() and not l.startswith(b"-----")]
            if body and len(body[len(body) // 2]) >= 16:
                needles[body[len(body) // 2]] = str(path.relative_to(folder))
    return needles


PEM_END = b"PRIVATE " + b"KEY-----"  # split: this file is no key to a scan of the repository
PEM_KEY = re.compile(rb"-----BEGIN ([A-Z0-9]+ )*PRIVATE[ ]KEY-----\r?\n(?:[A-Za-z-]+:[^\n]*\n)*\r?\n?[A-Za-z0-9+/=]{40}")
OPENSSH_KEY = b"b3BlbnNzaC1rZXktdjE"  # "openssh-key-v1", base64: every OpenSSH private key starts so

# Private keys that ship inside third-party packages: (where in the image, the package, why).
# Nothing else may hold one.
THIRD_PARTY_TEST_KEYS = [
    ("opt/venv/lib/python3.13/site-packages/Crypto/SelfTest/", "pycryptodome (PyPI, a dependency of flwr)",
     "its self-tests' published RSA, DSA and ECC test vectors, for its key import and signature code"),
    ("usr/lib/python3/dist-packages/fsspec/implementations/tests/keycert.pem",
     "python3-fsspec (Debian, a dependency of python3-torch)", "the certificate and key of fsspec's own test server"),
]


def scan_layers(image_names: list[str], needles: dict[bytes, str]) -> list[tuple[str, str]]:
    """(path, what) for every file of every layer of the images (`docker save`, once) that holds a
    PEM private key (a header and key material after it: code that parses keys names the header
    alone), an OpenSSH private key, or a needle."""
    found = []
    save = subprocess.Popen(["docker", "save", *image_names], stdout=subprocess.PIPE)
    overlap = 4096
    with tarfile.open(fileobj=save.stdout, mode="r|") as archive:
        for member in archive:
            if not member.name.endswith("layer.tar") or not member.isfile():  # a link: a layer seen already
                continue
            with tarfile.open(fileobj=archive.extractfile(member), mode="r|") as layer:
                for item in layer:
                    if not item.isfile() or item.size < 40:
                        continue
                    stream, tail = layer.extractfile(item), b""
                    while chunk := stream.read(1 << 23):
                        data = tail + chunk
                        tail = data[-overlap:]
                        what = next((f"the test's {name}" for needle, name in needles.items() if needle in data),
                                    "PEM private key" if PEM_END in data and PEM_KEY.search(data) else
                                    "OpenSSH private key" if OPENSSH_KEY in data else None)
                        if what:
                            found.append((item.name, what))
                            break
    assert save.wait() == 0, "docker save failed"
    return sorted(set(found))


@pytest.mark.docker
def test_no_layer_of_any_image_holds_a_private_key(operator_keys):
    found = scan_layers([image for image, _ in images_and_locks().values()], operator_keys)
    assert found, "the scan found not even the third-party test keys: it scans nothing"
    unexplained = [(path, what) for path, what in found
                   if "test's" in what or not any(path.startswith(where) for where, _, _ in THIRD_PARTY_TEST_KEYS)]
    assert unexplained == [], "a private key in an image layer"


@pytest.mark.docker
def test_the_build_context_holds_no_key(operator_keys, tmp_path):
    """What of certs/ the real build context holds (.dockerignore, applied by BuildKit): the
    certificate maker (make_certs.py and its modules) alone, not the keys just made there."""
    out = tmp_path / "context"
    sh("docker", "buildx", "build", "--quiet", "--output", f"type=local,dest={out}", "--file", "-", ".",
       input="FROM scratch\nCOPY certs /certs\n", timeout=300)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(CERT_MAKER)
