"""What a check of one Flower internal is: an attribute that must exist, a parameter a signature
must have, a constant's value, a protobuf field, or text a Flower source file must still hold; and
the helpers they share. The list of what the project relies on: flowerdock_logging/flower_internals.py.

Attribute, Parameter, Value and ProtoField import the Flower module (for a process that imports it
anyway); Text reads Flower's source file and never imports it (for a process that imports no
Flower, or a module that would import Ray).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Reliance:
    used_by: str  # the project's files that rely on it, space-separated
    why: str

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.used_by.split())

    @property
    def what(self) -> str:
        raise NotImplementedError

    def problem(self) -> str | None:
        """None when the installed Flower has it; else what is wrong."""
        raise NotImplementedError


@dataclass(frozen=True)
class Attribute(Reliance):
    """`module:name.path` exists (a property is found, not run)."""

    target: str

    @property
    def what(self) -> str:
        return self.target.replace(":", ".")

    def problem(self) -> str | None:
        try:
            resolve(self.target, run_last=False)
        except (ImportError, AttributeError) as exc:
            return f"missing ({type(exc).__name__}: {exc})"
        return None


@dataclass(frozen=True)
class Parameter(Reliance):
    """The callable at `module:name.path` takes these parameters (space-separated)."""

    target: str
    parameters: str

    @property
    def what(self) -> str:
        return f"{self.target.replace(':', '.')}({', '.join(self.parameters.split())})"

    def problem(self) -> str | None:
        import inspect  # not at import: this module is loaded at every interpreter start

        try:
            signature = inspect.signature(resolve(self.target))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            return f"missing ({type(exc).__name__}: {exc})"
        missing = [name for name in self.parameters.split() if name not in signature.parameters]
        return f"takes no {', '.join(missing)}: its signature is now {signature}" if missing else None


@dataclass(frozen=True)
class Value(Reliance):
    """`module:name.path` equals `expected`."""

    target: str
    expected: Any

    @property
    def what(self) -> str:
        return f"{self.target.replace(':', '.')} == {self.expected!r}"

    def problem(self) -> str | None:
        try:
            value = resolve(self.target)
        except (ImportError, AttributeError) as exc:
            return f"missing ({type(exc).__name__}: {exc})"
        return None if value == self.expected else f"is now {value!r}"


@dataclass(frozen=True)
class ProtoField(Reliance):
    """The protobuf message `module:Message` has these fields (space-separated)."""

    target: str
    fields: str

    @property
    def what(self) -> str:
        return f"{self.target.replace(':', '.')}{{{', '.join(self.fields.split())}}}"

    def problem(self) -> str | None:
        try:
            known = resolve(self.target).DESCRIPTOR.fields_by_name
        except (ImportError, AttributeError) as exc:
            return f"missing ({type(exc).__name__}: {exc})"
        missing = [name for name in self.fields.split() if name not in known]
        return f"has no field {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Text(Reliance):
    """Flower's source file flwr/`file` still holds each of `texts` (a string or a tuple of them)."""

    file: str
    texts: str | tuple[str, ...]

    @property
    def snippets(self) -> tuple[str, ...]:
        return (self.texts,) if isinstance(self.texts, str) else self.texts

    @property
    def what(self) -> str:
        return f"flwr/{self.file}: " + ", ".join(repr(text) for text in self.snippets)

    def problem(self) -> str | None:
        try:
            source = flower_source(self.file)
        except OSError as exc:
            return f"cannot read it ({exc.strerror or exc})"
        missing = [text for text in self.snippets if text not in source]
        if not missing:
            return None
        return "no longer in the file" if len(self.snippets) == 1 else \
            f"{', '.join(repr(text) for text in missing)} no longer in the file"


def resolve(target: str, run_last: bool = True) -> Any:
    """The object at `module:name.path`. A module imported already is not imported again (the
    logging hook checks a module from inside its import). run_last=False: the last name is
    looked up without running it (TaskIdentity's properties raise until a task sets them)."""
    module_name, _, path = target.partition(":")
    found: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
    names = path.split(".") if path else []
    for index, name in enumerate(names):
        if run_last or index < len(names) - 1:
            found = getattr(found, name)
        else:
            import inspect

            found = inspect.getattr_static(found, name)
    return found


@lru_cache(maxsize=16)
def flower_source(file: str) -> str:
    """The text of flwr/`file`, found without importing Flower (`import flwr` costs half a second)."""
    spec = importlib.util.find_spec("flwr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Flower (flwr) is not installed, so flwr/{file} is not there")
    return (Path(next(iter(spec.submodule_search_locations))) / file).read_text(encoding="utf-8")


def flower_version() -> str:
    """The installed Flower's version; its pre-releases are the `flwr-nightly` distribution
    (as Flower's own flwr/supercore/version.py looks for it)."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("flwr", "flwr-nightly"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "(none)"
