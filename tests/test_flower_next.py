"""The logic of scripts/flower_next/, offline: the newest pre-release in PyPI's JSON, versions and
specifiers, Requires-Dist and markers, what the nightly still needs, the .pth line, the view of .venv."""

from __future__ import annotations

import os
import site
import sys

import pytest

from scripts.flower_next import pypi, requirements, versions
from scripts.flower_next import venv as next_venv

FILE = [{"filename": "flwr_nightly-x-py3-none-any.whl", "yanked": False}]
LINUX_311 = {**requirements.marker_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
             "sys_platform": "linux", "os_name": "posix"}
# As flwr-nightly 1.43.0.dev20261026's METADATA has them.
METADATA = """Metadata-Version: 2.4
Name: flwr-nightly
Version: 1.43.0.dev20261026
Requires-Dist: numpy>=1.26.0,<3.0.0
Requires-Dist: uv>=0.13.5,<0.14.0
Requires-Dist: packaging>=24.0,<26.0
Requires-Dist: sqlalchemy[asyncio]>=2.0.45,<3.0.0
Requires-Dist: mcp>=1.26.0,<2.0.0 ; extra == 'agent'
Requires-Dist: ray==2.55.1 ; python_full_version >= '3.11' and python_full_version < '3.13' and extra == 'simulation'
Requires-Dist: ray==2.55.1 ; python_full_version >= '3.13' and python_full_version < '3.15' and sys_platform != 'win32' and extra == 'simulation'

Flower: a friendly federated AI framework.
"""


def test_the_newest_prerelease_is_picked_by_version_not_by_text_nor_by_order():
    answer = {"info": {"name": "flwr-nightly"}, "releases": {
        "1.9.0.dev20240609": FILE,          # the largest string, an old version
        "1.43.0.dev20261026": FILE,
        "1.43.0.dev20261020": FILE,
        "1.43.0.dev20261101": [{**FILE[0], "yanked": True}],  # every file yanked
        "1.44.0.dev20261102": [],           # no file
        "1.45.0": FILE,                     # not a pre-release
    }}
    assert pypi.newest_prerelease(answer) == "1.43.0.dev20261026"
    answer["releases"]["1.43.0rc1"] = FILE  # a release candidate comes after the dev releases of 1.43.0
    assert pypi.newest_prerelease(answer) == "1.43.0rc1"


def test_no_prerelease_is_a_clear_error():
    with pytest.raises(ValueError, match="no pre-release with files"):
        pypi.newest_prerelease({"info": {"name": "flwr-nightly"}, "releases": {"1.42.0": FILE}})


def test_versions_sort_as_pep_440_says():
    ordered = ["0.9", "1.0.dev1", "1.0a1.dev2", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1.dev1", "1.0.post1",
               "1.1.dev20261026", "1.10"]
    assert sorted(reversed(ordered), key=versions.version_key) == ordered
    assert versions.version_key("1.0") == versions.version_key("1.0.0")
    assert versions.version_key("not a version") is None
    assert [versions.is_prerelease(v) for v in ("1.43.0.dev20261026", "1.43.0rc1", "1.43.0", "1.42.0.post1")] \
        == [True, True, False, False]


@pytest.mark.parametrize("version, specifier, expected", [
    ("26.0", ">=24.0,<26.0", False), ("25.0", ">=24.0,<26.0", True),
    ("2.15.0+cu132", "==2.15.0", True),            # a local version meets its public one
    ("2026.10.19.post1", ">=2026.10.19", True),
    ("2.0.5", "==2.0.*", True), ("2.1", "==2.0.*", False), ("2.1", "!=2.0.*", True),
    ("1.4.9", "~=1.4.5", True), ("1.5", "~=1.4.5", False), ("1.4.4", "~=1.4.5", False),
    ("1.0", "", True), ("weird", ">=1", False), ("1.0", "=>1", False),
])
def test_specifiers(version, specifier, expected):
    assert versions.satisfies(version, specifier) is expected


def test_requires_dist_lines_are_parsed():
    lines = requirements.requires_dist(METADATA)
    assert len(lines) == 7
    parsed = [requirements.parse_requirement(line) for line in lines]
    assert parsed[3] == requirements.Requirement("sqlalchemy", ("asyncio",), ">=2.0.45,<3.0.0", "",
                                                 "sqlalchemy[asyncio]>=2.0.45,<3.0.0")
    assert parsed[5].name == "ray" and parsed[5].specifier == "==2.55.1" and parsed[5].text == "ray==2.55.1"
    assert "extra == 'simulation'" in parsed[5].marker
    old_style = requirements.parse_requirement("Typing_Extensions (>=4.0) ; python_version < '3.12'")
    assert (old_style.name, old_style.specifier, old_style.marker) == ("typing-extensions", ">=4.0",
                                                                      "python_version < '3.12'")


def test_markers_hold_for_this_python_and_the_extras_asked():
    ray_311, ray_313 = [requirements.parse_requirement(line).marker
                        for line in requirements.requires_dist(METADATA) if line.startswith("ray")]
    assert requirements.marker_applies(ray_311, LINUX_311, ("simulation",))
    assert not requirements.marker_applies(ray_311, LINUX_311)  # without the extra
    assert not requirements.marker_applies(ray_313, LINUX_311, ("simulation",))
    assert requirements.marker_applies(ray_313, {**LINUX_311, "python_full_version": "3.13.1"}, ("simulation",))
    assert requirements.marker_applies("os_name == 'nt' or (sys_platform == 'linux' and python_version >= '3.10')",
                                       LINUX_311)
    assert requirements.marker_applies("platform_machine not in 'arm64 aarch64'",
                                       {**LINUX_311, "platform_machine": "x86_64"})


def test_a_marker_is_evaluated_never_executed():
    with pytest.raises(ValueError, match="marker not understood"):
        requirements.marker_applies("os_name == 'posix' or __import__('os').system('false')", LINUX_311)


def test_what_the_nightly_needs_is_what_nothing_installed_meets():
    installed = {"numpy": "2.4.6", "packaging": "26.0", "sqlalchemy": "2.1.9", "ray": "2.55.1"}
    lines = [*requirements.requires_dist(METADATA), "flwr>=1.42"]
    unmet = requirements.unmet(lines, installed, LINUX_311, ("simulation",))
    # uv is missing, packaging too new; flwr is the nightly itself; the agent extra is not asked for
    assert [r.text for r in unmet] == ["uv>=0.13.5,<0.14.0", "packaging>=24.0,<26.0"]
    assert [r.name for r in requirements.unmet(lines, {**installed, "ray": "2.54.0"}, LINUX_311,
                                               ("simulation",))] == ["uv", "packaging", "ray"]


def test_the_pth_line_adds_the_view_of_the_host_venv_after_the_venv_s_own(monkeypatch):
    line = next_venv.pth_line()
    assert line.startswith("import ") and line.count("\n") == 1  # site runs one-line `import` lines only
    added = []
    monkeypatch.setattr(site, "addsitedir", added.append)  # appends to sys.path, and runs that dir's .pth files
    monkeypatch.setattr(sys, "prefix", "/somewhere/.venv-flower-next")
    exec(line)
    assert added == ["/somewhere/.venv-flower-next/host-site-packages"]  # no path of this checkout written in


def test_the_view_links_every_host_entry_but_flower_and_never_touches_the_host(tmp_path, monkeypatch):
    host, venv = tmp_path / "main" / ".venv", tmp_path / "main" / ".venv-flower-next"
    packages = next_venv.site_packages(host)
    for name in ("torch", "flwr", "flwr-1.42.0.dist-info", "flwr_datasets", "ray-2.55.1.dist-info"):
        (packages / name).mkdir(parents=True)
        (packages / name / "file").write_text(name)
    (packages / "flowerdock_logging.pth").write_text("import flowerdock_logging.startup\n")
    monkeypatch.setattr(next_venv, "HOST_VENV", host)
    monkeypatch.setattr(next_venv, "NEXT_VENV", venv)
    venv.mkdir()
    next_venv.make_view()
    view = venv / "host-site-packages"
    assert sorted(entry.name for entry in view.iterdir()) == ["flowerdock_logging.pth", "flwr_datasets",
                                                              "ray-2.55.1.dist-info", "torch"]
    assert all(entry.is_symlink() and not os.path.isabs(os.readlink(entry)) for entry in view.iterdir())
    assert (view / "torch" / "file").read_text() == "torch"
    (packages / "torch" / "file").unlink()
    (packages / "torch").rmdir()
    next_venv.make_view()  # refreshed: what .venv no longer has is gone, the rest untouched
    assert not (view / "torch").exists() and (packages / "ray-2.55.1.dist-info" / "file").read_text()
    assert sorted(p.name for p in packages.iterdir()) == ["flowerdock_logging.pth", "flwr", "flwr-1.42.0.dist-info",
                                                          "flwr_datasets", "ray-2.55.1.dist-info"]


@pytest.mark.parametrize("line, expected", [
    ("flowerdock 1.0.0 requires flwr, which is not installed.", True),
    ("flowerdock 1.0.0 has requirement flwr==1.42.0, but you have flwr 1.41.0.", True),
    ("flowerdock 1.0.0 requires flwr[simulation], which is not installed.", True),
    ("flwr-nightly 1.43.0.dev20261026 requires uv, which is not installed.", False),
    ("foo 1.0 requires flwr-datasets, which is not installed.", False),
])
def test_pip_check_lines_about_flwr_alone_are_expected(line, expected):
    assert next_venv.expected_pip_check_line(line) is expected
