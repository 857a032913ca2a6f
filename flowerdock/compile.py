"""A declared type hint, compiled into a Rule.

    bool | int | float | str | bytes | Literal[...]       scalars
    dict[K, V] | list[V]                                   containers, nested freely
    Annotated[T, Range(...) | Size(...) | Text(...)]       bounds
    T | None                                               optional (declared with a default of None)

Map keys are text (`Key`, an Annotated str, or a Literal of the allowed keys). Texts, byte
strings, maps and lists must carry a bound: an unbounded field is a declaration error.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

from flowerdock import scalars
from flowerdock.bounds import BOUNDS, Range, Size, Text
from flowerdock.containers import list_rule, map_rule, printable_keys_in_bulk
from flowerdock.rule import Rule


class DeclarationError(TypeError):
    """A declaration the layer cannot check safely: raised when the class is declared, not at run time."""


def split_annotated(hint: Any) -> tuple[Any, dict[type, Any]]:
    """The bare type and its bounds, by bound class."""
    if get_origin(hint) is not Annotated:
        return hint, {}
    bounds = {type(extra): extra for extra in hint.__metadata__ if isinstance(extra, BOUNDS)}
    return hint.__origin__, bounds


def split_optional(hint: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, else (hint, False)."""
    if get_origin(hint) not in (typing.Union, types.UnionType):
        return hint, False
    others = [arg for arg in get_args(hint) if arg is not type(None)]
    if len(others) != 1 or len(others) == len(get_args(hint)):
        raise DeclarationError(f"only `T | None` unions are supported, got {hint!r}")
    return others[0], True


def compile_hint(hint: Any, where: str, from_wire: bool) -> Rule:
    """The Rule for a field's type (without its `| None`: the message layer handles absence)."""
    base, bounds = split_annotated(hint)
    origin = get_origin(base)
    if base is bool:
        return scalars.bool_rule()
    if base is int:
        return scalars.int_rule(bounds.get(Range))
    if base is float:
        return scalars.float_rule(bounds.get(Range))
    if base is str:
        return scalars.text_rule(bounds.get(Text))
    if base is bytes:
        return scalars.bytes_rule(_needs(bounds, Size, where, "a byte string"))
    if origin is Literal:
        return scalars.choice_rule(get_args(base))
    if origin is dict:
        return _map(base, bounds, where, from_wire)
    if origin is list:
        item = compile_hint(get_args(base)[0], f"{where}[]", from_wire)
        return list_rule(item, _needs(bounds, Size, where, "a list"))
    raise DeclarationError(f"{where}: type {hint!r} is not supported (see flowerdock.compile)")


def _map(base: Any, bounds: dict[type, Any], where: str, from_wire: bool) -> Rule:
    key_hint, value_hint = get_args(base)
    key_base, key_bounds = split_annotated(key_hint)
    value = compile_hint(value_hint, f"{where}[]", from_wire)
    size = _needs(bounds, Size, where, "a map")
    if get_origin(key_base) is Literal:
        choices = get_args(key_base)
        if not all(type(choice) is str for choice in choices):
            raise DeclarationError(f"{where}: map keys must be text")
        return map_rule(scalars.choice_test(choices), scalars.choice_says(choices), value, size, None)
    if key_base is not str:
        raise DeclarationError(f"{where}: map keys must be text (Key, Annotated[str, Text(...)] or a Literal)")
    rule = key_bounds.get(Text) or Text()
    return map_rule(scalars.text_test(rule), scalars.text_says(rule), value, size,
                    printable_keys_in_bulk(rule, from_wire))


def _needs(bounds: dict[type, Any], bound: type, where: str, what: str) -> Any:
    if bound not in bounds:
        raise DeclarationError(f"{where}: {what} needs a bound: Annotated[..., {bound.__name__}(max=...)]")
    return bounds[bound]
