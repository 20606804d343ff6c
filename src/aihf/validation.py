"""One check for every field of every config dataclass: its type from the type hints, its range from a
mapping declared beside the dataclass. Bad values raise `InputError` naming the field, the value and
what is accepted, when the config is built, so nothing fails mid-run.

Types understood: int, float, bool, str, Literal[...], X | None, unions, list[X], tuple[X, ...] and
dict[str, X] (a mapping with text keys; the owner checks its entries).
Floats refuse NaN and inf and accept ints; ints refuse bools and floats; a float written as a YAML
string such as "1e-5" (PyYAML reads a mantissa without a dot as text) is accepted as the number.
A `Range` of a list or tuple field applies to each item.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aihf.errors import InputError
from aihf.safety import check_input_file, describe_os_error


@dataclass(frozen=True)
class Range:
    """Accepted numeric interval; `None` ends are unbounded, `*_open` ends exclude the bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "finite"


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)  # closed [0, 1]
ANY = Range()  # any finite number
SEED = Range(0, 2**32 - 1)  # numpy's seed range
LENGTH = Range(1, 2**20)  # token counts: larger values are typos, not models


def validate_config(config: Any, ranges: dict[str, Range]) -> None:
    """Check (and normalise in place: int -> float, list -> tuple) every field of a dataclass instance.

    `ranges` maps a field name to its Range; a key "ClassName.field" overrides it for one class.
    """
    cls = type(config)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        limits = ranges.get(f"{cls.__name__}.{f.name}", ranges.get(f.name))
        checked = check_value(f"field {f.name!r}", value, hints[f.name], limits)
        if checked is not value:
            object.__setattr__(config, f.name, checked)


def check_value(name: str, value: Any, hint: Any, limits: Range | None = None) -> Any:
    """The value converted to `hint`, or InputError "name = value: expected ..." (name: a field or flag)."""
    try:
        return _convert(value, hint, limits)
    except _Mismatch as err:
        raise InputError(f"{name} = {value!r}: expected {err}") from None


class _Mismatch(Exception):
    """Internal: carries the description of what was expected."""


def _convert(value: Any, hint: Any, limits: Range | None) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise _Mismatch("one of " + ", ".join(repr(a) for a in args))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, limits)
            except _Mismatch as err:
                errors.append(str(err))
        raise _Mismatch(" or ".join(errors + (["null"] if type(None) in args else [])))
    if origin in (list, tuple):
        item = args[0] if args else Any
        expected = f"a list of {_describe(item, limits, plural=True)}"
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(expected)
        try:
            items = [_convert(v, item, limits) for v in value]
        except _Mismatch:
            raise _Mismatch(expected) from None
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise _Mismatch("a mapping of name: value")
    if hint is Any:
        return value
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch("a mapping")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("a string")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and (limits is None or value in limits):
            return value
        raise _Mismatch(_describe(int, limits))
    if hint is float:
        number = _float(value)
        if number is not None and math.isfinite(number) and (limits is None or number in limits):
            return number
        raise _Mismatch(_describe(float, limits))
    raise TypeError(f"validate_config does not understand the type {hint!r}")  # a bug, not user input


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _describe(hint: Any, limits: Range | None, plural: bool = False) -> str:
    nouns = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}
    noun = nouns.get(hint, (str(hint), str(hint)))[plural]
    if hint is float and (limits is None or limits == ANY):
        return "finite numbers" if plural else "a finite number"
    return f"{noun} {limits.describe()}" if limits is not None and limits != ANY else noun


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML config file as a mapping; any problem is one InputError line naming the file (and line)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: config file not found (it is a directory)")
    check_input_file(path, "config file")  # a FIFO would block the read; a broken link is named
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text (UTF-8) YAML file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the config file ({describe_os_error(err)})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or type(err).__name__
        raise InputError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    bad_keys = [k for k in values if not isinstance(k, str)]
    if bad_keys:
        raise InputError(f"{path}: option names must be text, got {bad_keys[0]!r}")
    return values
