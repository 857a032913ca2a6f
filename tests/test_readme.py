"""The README's commands, as a newcomer types them on a fresh clone: from a shell
without the virtualenv on PATH. `make test` is what CI runs; `make simulation` is
tests/test_simulation.py; the Docker ones are here."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, fresh_shell_env, sh

QUICK_START = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def make(*targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *targets], cwd=ROOT, env=fresh_shell_env(),
                          capture_output=True, text=True, timeout=1800)


def test_the_quick_start_opens_with_the_two_commands():
    assert commands(QUICK_START) == ["make federation", "make test"]


@pytest.fixture
def checkout_project(images):
    """What the checkout's own compose project leaves behind is removed afterwards."""
    yield
    for files in (["compose.yaml"], ["compose.yaml", "docker/compose.sites.yaml"]):
        sh("docker", "compose", *(a for f in files for a in ("-f", f)), "--profile", "run", "down", "--volumes",
           "--remove-orphans", "--timeout", "5", check=False, env={"SITES_DIR": "/nonexistent"})


@pytest.mark.docker
def test_make_federation_as_typed(checkout_project):
    result = make("federation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"event": "run_outcome"' in result.stdout and '"status": "finished:completed"' in result.stdout


@pytest.fixture
def own_sites_kept(tmp_path):
    """`make sites` writes ./sites: a developer's own folder is put back afterwards."""
    own = ROOT / "sites"
    if own.exists():
        own.rename(tmp_path / "sites")
    yield
    shutil.rmtree(own, ignore_errors=True)
    if (tmp_path / "sites").exists():
        (tmp_path / "sites").rename(own)


@pytest.mark.docker
def test_make_sites_then_federation_sites_as_typed(checkout_project, own_sites_kept):
    sites = make("sites")
    assert sites.returncode == 0, sites.stderr
    assert any(line.split()[:4] == ["site", "format", "train", "val"] for line in sites.stdout.splitlines())
    assert sorted(p.name for p in (ROOT / "sites").iterdir()) == ["site-1", "site-2", "site-3"]
    result = make("federation-sites")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"status": "finished:completed"' in result.stdout
