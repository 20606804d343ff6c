"""Protocol files: a benchmark's fixed choices (methods, seeds, budgets, grids) as YAML a reader can
diff, checked field by field before any job starts."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from aihf.errors import InputError
from aihf.validation import check_value, load_yaml

T = TypeVar("T")


def read_protocol(path: str | Path, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """`cls` (a dataclass) from the YAML file at `path`, `overrides` on top. An unknown or badly
    typed field is one InputError naming the file and the field."""
    values = load_yaml(path) | (overrides or {})
    return from_mapping(values, cls, str(path))


def from_mapping(values: dict[str, Any], cls: type[T], where: str) -> T:
    """`cls` from `values`, each field checked against its type hint (nested dataclasses too)."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of {cls.__name__} fields")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(
            f"{where}: unknown field {unknown[0]!r}: expected some of {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    checked = {name: _check(value, hints[name], f"{where}: field {name!r}") for name, value in values.items()}
    try:
        return cls(**checked)
    except TypeError as err:  # a required field left out
        raise InputError(f"{where}: {err}") from None


def _check(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against `hint`: dataclasses, `dict[str, X]` and lists of them here, the rest
    (numbers, strings, lists of them, unions) by `aihf.validation.check_value`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(value, hint, where)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        return None if value is None else _check(value, next(a for a in args if a is not type(None)), where)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InputError(f"{where} = {value!r}: expected a mapping with string keys")
        return {key: _check(entry, args[1], f"{where}, {key!r}") for key, entry in value.items()}
    if origin is list and args and _structured(args[0]):
        if not isinstance(value, list):
            raise InputError(f"{where} = {value!r}: expected a list")
        return [_check(entry, args[0], f"{where}, entry {i}") for i, entry in enumerate(value)]
    return check_value(where, value, hint)


def _structured(hint: Any) -> bool:
    return dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (dict, list)
