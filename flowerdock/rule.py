"""What a declared type compiles to: a check, how it is written, how deep it nests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowerdock.errors import MessageError


@dataclass(frozen=True)
class Rule:
    """The compiled form of one declared type.

    `valid(value)` answers quickly and exactly whether a value passes; only when it does not
    is `explain(value, path)` called, to build the error that names the field and the reason.
    Keeping the two apart means a valid map of a thousand entries never formats a path.
    """

    valid: Callable[[Any], bool]
    explain: Callable[[Any, str], MessageError]
    to_wire: Callable[[Any], Any] | None = None  # None: written as it is
    depth: int = 0  # containers nested in this type: a float 0, a map of floats 1
    bulk: Callable[[Any], bool] | None = None  # for containers: True only if every entry is valid (fast)

    def check(self, value: Any, path: str) -> None:
        if not self.valid(value):
            raise self.explain(value, path)


def explained(explain: Callable[[Any, str], str]) -> Callable[[Any, str], MessageError]:
    """An `explain` built from a function that returns the message's text."""
    return lambda value, path: MessageError(explain(value, path))
