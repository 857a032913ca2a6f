"""Rules for the scalar types: bool, int, float, str, bytes and Literal choices."""

from __future__ import annotations

import re
import sys
from math import isfinite
from typing import Any

from flowerdock.bounds import Range, Size, Text
from flowerdock.errors import MessageError, cbor_type, number_text, shown, shown_integer
from flowerdock.rule import Rule, explained

# CBOR carries integers of up to 64 bits without a tag, and tags are refused: the widest range.
INT_RANGE = Range(-(2**64), 2**64 - 1)
# Any finite float: `low <= value <= high` then also refuses NaN and the infinities.
FLOAT_RANGE = Range(-sys.float_info.max, sys.float_info.max)


def bool_rule() -> Rule:
    return Rule(lambda value: type(value) is bool,
                explained(lambda value, path: f"{path} must be bool, got {cbor_type(value)}"))


def int_rule(bound: Range | None) -> Rule:
    low, high = (bound or INT_RANGE).low, (bound or INT_RANGE).high
    says = f"an integer from {number_text(low)} to {number_text(high)}"
    # A bool is an int to Python, not to a schema: `type(...) is int` refuses it.
    def bulk(values: Any) -> bool:  # a few C-level passes over a container's values
        return set(map(type, values)) == {int} and low <= min(values) and max(values) <= high

    return Rule(lambda value: type(value) is int and low <= value <= high,
                explained(lambda value, path: f"{path} must be {says}, got {shown_integer(value)}"), bulk=bulk)


def float_rule(bound: Range | None) -> Rule:
    """A finite float, or an integer (other encoders shrink 2.0 to 2); never a bool."""
    bound = bound or FLOAT_RANGE
    low, high = bound.low, bound.high

    def valid(value: Any) -> bool:
        if type(value) is float:
            return low <= value <= high  # NaN fails it too
        return type(value) is int and _in_range(value, low, high)

    def explain(value: Any, path: str) -> MessageError:
        if type(value) not in (float, int):
            return MessageError(f"{path} must be a number, got {cbor_type(value)}")
        if not _finite(value):
            return MessageError(f"{path} must be finite, got {value if type(value) is float else 'integer'}")
        unit = f" {bound.unit}" if bound.unit else ""
        return MessageError(f"{path} must be between {number_text(low)} and {number_text(high)}{unit}, "
                            f"got {float(value)}")

    def bulk(values: Any) -> bool:
        # A sum is finite only if every term is (a finite sum that overflows just costs the loop).
        if set(map(type, values)) != {float} or not isfinite(sum(values)):
            return False
        return bound is FLOAT_RANGE or (low <= min(values) and max(values) <= high)

    return Rule(valid, explain, bulk=bulk)


def _finite(value: float | int) -> bool:
    try:
        return isfinite(value)
    except OverflowError:  # an integer past the float range (only a constructor can be given one)
        return False


def _in_range(value: int, low: float, high: float) -> bool:
    return _finite(value) and low <= value <= high


def text_test(rule: Text) -> Any:
    """The predicate a text must pass, on its own: value checks and map keys both use it."""
    pattern = re.compile(rule.pattern) if rule.pattern else None
    low, high, printable, extra = rule.min, rule.max, rule.printable and not pattern, rule.check
    if printable and extra is None:  # the usual key: one expression, as a map checks it per entry
        return lambda value: type(value) is str and low <= len(value) <= high and value.isprintable()

    def test(value: Any) -> bool:
        if type(value) is not str or not low <= len(value) <= high:
            return False
        if printable and not value.isprintable():
            return False
        if pattern is not None and not pattern.fullmatch(value):
            return False
        return extra is None or bool(extra(value))

    return test


def text_says(rule: Text) -> str:
    if rule.says:
        return rule.says
    if rule.pattern:
        return f"text of {rule.min}-{rule.max} characters matching {rule.pattern!r}"
    return f"{'printable ' if rule.printable else ''}text of {rule.min}-{rule.max} characters"


def text_rule(rule: Text | None) -> Rule:
    rule = rule or Text()
    says = text_says(rule)
    return Rule(text_test(rule), explained(lambda value, path: f"{path} must be {says}, got {shown(value)}"))


def bytes_rule(size: Size) -> Rule:
    says = f"a byte string of {size.min}-{size.max} bytes"

    def explain(value: Any, path: str) -> str:
        got = f"{len(value)} bytes" if type(value) is bytes else cbor_type(value)
        return f"{path} must be {says}, got {got}"

    return Rule(lambda value: type(value) is bytes and size.min <= len(value) <= size.max, explained(explain))


def choice_test(choices: tuple[Any, ...]) -> Any:
    allowed = {(type(choice), choice) for choice in choices}  # True is not 1 here
    return lambda value: (type(value), value) in allowed if _hashable(value) else False


def choice_says(choices: tuple[Any, ...]) -> str:
    return "one of " + ", ".join(repr(choice) for choice in choices)


def choice_rule(choices: tuple[Any, ...]) -> Rule:
    says = choice_says(choices)
    return Rule(choice_test(choices), explained(lambda value, path: f"{path} must be {says}, got {shown(value)}"))


def _hashable(value: Any) -> bool:
    return type(value) in (str, int, float, bool, bytes, type(None))
