"""The folders the app's FAB ships (pyproject.toml's fab-include: the app and the message layer
it imports), for the tests that assemble a variant of the app in another folder."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fab_include() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["fab-include"]


def copy_app(dest: Path) -> Path:
    """Every folder the FAB ships (`name/**` in fab-include), copied into `dest`, and pyproject.toml."""
    for pattern in fab_include():
        folder = pattern.removesuffix("/**")
        if folder != pattern:
            shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def shipping(pyproject: str, *files: str) -> str:
    """pyproject.toml's text with `files` added to fab-include."""
    listed = "".join(f'"{name}", ' for name in files)
    return pyproject.replace("fab-include = [", f"fab-include = [{listed}", 1)
