"""The bounds a declaration puts on a field, with `typing.Annotated`.

    training_time: Annotated[float, Range(0, 3600, unit="seconds")]
    losses: Annotated[dict[Key, float], Size(max=1000)]
    node_id: Annotated[str, Text(pattern=r"[0-9a-f]{1,64}", says="1-64 lowercase hex digits")]

Every text, byte string, list and map must say how long it may be: the payload's size cap bounds
the whole, a declared bound says what is sane for this one field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """A number's closed range: low <= value <= high. `unit` is only for the error message."""

    low: float
    high: float
    unit: str = ""


@dataclass(frozen=True)
class Size:
    """How many entries a map or list, or bytes a byte string, may hold."""

    max: int
    min: int = 0


@dataclass(frozen=True)
class Text:
    """A text's rule: its length in characters, printable (the default) or a pattern, or a check.

    `says` is what the error tells a sender the text must be ("1-64 lowercase hex digits").
    `check` is called with the text, after the length and pattern, and returns whether it is valid.
    """

    min: int = 1
    max: int = 64
    pattern: str | None = None
    printable: bool = True
    says: str | None = None
    check: Callable[[str], bool] | None = None


# A map key of the usual kind: printable text of 1-64 characters ("epoch_1", "malignant").
Key = Annotated[str, Text(1, 64)]

BOUNDS: tuple[type[Any], ...] = (Range, Size, Text)
