"""JSON read back into dataclasses, every field checked against its annotation.

What krait reads back (an image's manifest, an instance's records) may have been written
by someone else: a field of the wrong type is refused where it is read, not found where
it is used (a run record's ``"owner_pid": "1"`` once broke `krait ps` for every
instance, and a manifest's ``"settings": []`` ended in an internal error).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


class ShapeError(ValueError):
    """``data`` is not what the dataclass says; the message names the field."""


def from_json(cls: type[T], data: object, strict: bool = True) -> T:
    """``data`` (parsed JSON) as a ``cls``: an object holding every field without a
    default, each of its annotated type; with ``strict``, nothing else."""
    return typing.cast(T, _value(cls, data, cls.__name__, strict))


def _fields(cls: type[Any], data: object, where: str, strict: bool) -> Any:
    if not isinstance(data, dict):
        raise ShapeError(f"{where} is not an object")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - set(known))
    if extra and strict:
        raise ShapeError(f"{where} has an unknown field {str(extra[0])[:40]!r}")
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _value(hints[name], data[name], f"{where}.{name}", strict)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ShapeError(f"{where}.{name} is missing")
    return cls(**values)


def _value(kind: Any, value: object, where: str, strict: bool) -> Any:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _fields(kind, value, where, strict)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _value(option, value, where, strict)
            except ShapeError:
                pass
        raise ShapeError(f"{where} is not {_name(kind)}")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ShapeError(f"{where} is not a list")
        item = args[0]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{where}: only tuple[X, ...] is supported")
        items = [_value(item, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ShapeError(f"{where} is not an object")
        return {k: _value(args[1], v, f"{where}.{k}", strict) for k, v in value.items()}
    if kind is Any:
        return value
    if kind is type(None):
        if value is not None:
            raise ShapeError(f"{where} is not null")
        return None
    if kind is float and type(value) is int:
        return float(value)
    # bool is an int to Python, never to a manifest.
    if kind in (int, float, str, bool) and type(value) is kind:
        return value
    raise ShapeError(f"{where} is not {_name(kind)}")


def _name(kind: Any) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
             type(None): "null"}
    if kind in names:
        return names[kind]
    args = typing.get_args(kind)
    return " or ".join(_name(a) for a in args) if args else str(kind)
