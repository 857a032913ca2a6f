"""The Flower internals the project relies on (flowerdock_logging/flower_internals.py): the installed
Flower has them all; each one's check fails, naming who needs it, once Flower moves it; and the list
holds every name the repository takes from Flower outside its documented API."""

from __future__ import annotations

import ast
import inspect
import re
import types

import pytest

from flowerdock_logging import flower_internals, reliance
from flowerdock_logging.flower_internals import (Attribute, FlowerInternalsMissing, Parameter, ProtoField, Text,
                                                 Value)
from flowerdock_logging.reliance import flower_version, resolve
from tests.conftest import ROOT, run_python

# Flower's documented API: what these modules export (and the package's version) is used freely, never listed.
PUBLIC_API = {"flwr.app", "flwr.clientapp", "flwr.serverapp", "flwr.serverapp.strategy", "flwr.__version__"}
SEARCHED = ("app", "flowerdock_logging", "docker", "scripts", "certs")
FLOWER_NAME = re.compile(r"\bflwr(?:\.\w+)+(?::\w+)?")  # in strings: "flwr.a.b", "flwr.a.b:function"


def test_the_installed_flower_has_everything_the_project_relies_on():
    assert flower_internals.check() == []


def defined_in(owner: object, name: str) -> list[object]:
    """Where `owner.name` comes from: the module, or each class (and metaclass) that defines it."""
    if not isinstance(owner, type):
        return [owner]
    return [cls for cls in (*owner.__mro__, *type(owner).__mro__) if cls not in (object, type) and name in vars(cls)]


def break_it(item: reliance.Reliance, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the installed Flower lack `item`, as a release that moved it would."""
    if isinstance(item, Text):
        real = reliance.flower_source
        monkeypatch.setattr(reliance, "flower_source", lambda file: "" if file == item.file else real(file))
        return
    module, _, path = item.target.partition(":")
    owner_path, _, name = path.rpartition(".")
    owner = resolve(f"{module}:{owner_path}")
    if isinstance(item, Attribute):
        for holder in defined_in(owner, name):
            monkeypatch.delattr(holder, name)
    elif isinstance(item, Parameter):
        function = getattr(owner, name)
        signature = inspect.signature(function)
        kept = [p for p in signature.parameters.values() if p.name not in item.parameters.split()]
        monkeypatch.setattr(function, "__signature__", signature.replace(parameters=kept), raising=False)
    elif isinstance(item, Value):
        monkeypatch.setattr(owner, name, object())
    elif isinstance(item, ProtoField):
        no_fields = types.SimpleNamespace(DESCRIPTOR=types.SimpleNamespace(fields_by_name={}))
        monkeypatch.setattr(owner, name, no_fields)
    else:
        raise AssertionError(f"no way to break a {type(item).__name__}")


@pytest.mark.parametrize("item", flower_internals.RELIED_ON, ids=lambda item: item.what[:90])
def test_each_check_fails_when_flower_moves_its_target(item, monkeypatch):
    break_it(item, monkeypatch)
    assert item.problem() is not None
    with pytest.raises(FlowerInternalsMissing) as error:
        flower_internals.require(item.files[0])
    message = str(error.value)
    assert f"Flower {flower_version()} is installed" in message and "(none)" not in message
    line = next(line for line in message.split("\n  - ") if line.startswith(item.what))
    assert all(file in line for file in item.files), line


def flower_names(path) -> set[str]:
    """Every dotted Flower name the file imports, or names in a string (a module to hook, a target)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "flwr":
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("flwr.")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= {found.replace(":", ".") for found in FLOWER_NAME.findall(node.value)}
    return names


def python_files():
    """The Python of the searched folders: *.py, and scripts without a suffix (docker/flwr-clientapp)."""
    for folder in SEARCHED:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.name in ("flower_internals.py", "reliance.py"):  # the list
                continue
            if path.suffix == ".py" or (not path.suffix and path.read_bytes().startswith(b"#!/opt/venv/bin/python")):
                yield path


def test_every_flower_name_outside_the_documented_api_is_listed():
    listed = [item.what for item in flower_internals.RELIED_ON if not isinstance(item, Text)]
    unlisted = set()
    scanned = list(python_files())
    assert ROOT / "docker/flwr-clientapp" in scanned
    for path in scanned:
        for name in flower_names(path):
            public = name in PUBLIC_API or name.rpartition(".")[0] in PUBLIC_API
            if not public and not any(what == name or what.startswith((f"{name}.", f"{name}(", f"{name}{{",
                                                                        f"{name} ")) for what in listed):
                unlisted.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unlisted, "list these in flowerdock_logging/flower_internals.py:\n" + "\n".join(sorted(unlisted))


def test_the_supernode_entrypoints_check_imports_no_flower():
    # It runs at every container start, in a process that imports no Flower (`import flwr`: 0.5 s).
    result = run_python("import sys; from flowerdock_logging import flower_internals as f; "
                        "f.require('docker/supernode_'); print(sorted(m for m in sys.modules if m.startswith('flwr')))",
                        LOG_FORMAT="console")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_logging_hook_refuses_a_flower_without_its_console_handler(monkeypatch):
    import flwr.supercore.logger as logger_module

    from flowerdock_logging import flower_hooks

    monkeypatch.delattr(logger_module, "console_handler")
    with pytest.raises(FlowerInternalsMissing, match="flwr.supercore.logger.console_handler"):
        flower_hooks.take_over_flower(logger_module)
