"""Config dataclasses as command-line flags, and the old names of renamed config keys.

Every field of a config dataclass becomes a flag `--field_name` (also `--field-name`), as TRL's
`HfArgumentParser` does; its help is the field's comment in the class source (or its
`metadata["help"]`), its type, range and default. Values are read as YAML scalars (`1e-5`, `true`,
`null`); list fields take several words; mapping fields take a YAML / JSON mapping or the RL Zoo's
`dict(key=value, ...)` of literals, never evaluated as code. Only the flags given land on the
namespace (`given_fields`), so a flag overrides the config file and an absent one leaves it alone.

A renamed key (`Rename`) is still read under its old name, from YAML, flags and saved records:
`canonical` maps it to the new name, prints one deprecation line per name on stderr (records are
read silently), and refuses a mapping that gives both names.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aihf.errors import InputError
from aihf.validation import Range, check_value

DEST = "field:"  # namespace prefix of the generated flags' destinations


@dataclass(frozen=True)
class Rename:
    """A config key's old name, its new one, and how an old value becomes a new one."""

    old: str
    new: str
    convert: Callable[[Any], Any] | None = None


_warned: set[str] = set()


def canonical(
    values: Mapping[str, Any],
    renames: Iterable[Rename],
    where: str = "config",
    warn: bool = True,
    prefix: str = "",
) -> dict[str, Any]:
    """`values` with every old key under its new name (the value converted); `prefix` ("--" for
    flags) is how the names are shown. Both names at once is an InputError."""
    out = dict(values)
    for rename in renames:
        if rename.old not in out:
            continue
        old, new = f"{prefix}{rename.old}", f"{prefix}{rename.new}"
        if rename.new in out:
            raise InputError(
                f"{where}: {old} and {new} are one setting ({old} is its old name); give {new} only"
            )
        value = out.pop(rename.old)
        out[rename.new] = rename.convert(value) if rename.convert else value
        if warn and old not in _warned:
            _warned.add(old)
            print(f"aihf: warning: {where}: {old} is deprecated, use {new}", file=sys.stderr)
    return out


def field_help(cls: type) -> dict[str, str]:
    """Each field's help: `metadata["help"]`, else the comment on its line or the lines just above it
    in the source of the class that declares it."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass is not object:
            notes |= _comments(klass)
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            notes[f.name] = str(f.metadata["help"])
    return notes


def _comments(cls: type) -> dict[str, str]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line number (1-based) -> comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(inspect.cleandoc("\n" + source) if source[:1].isspace() else source).body[0]
    notes = {}
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):  # the comment block above
            parts.insert(0, comments.get(line, ""))
            line -= 1
        if node.lineno in comments and not lines[node.lineno - 1].strip().startswith("#"):
            parts.append(comments[node.lineno])
        if parts:
            notes[node.target.id] = " ".join(p for p in parts if p)
    return notes


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _options(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _is_list(hint: Any) -> bool:
    return any(typing.get_origin(h) in (list, tuple) for h in _options(hint))


def _is_mapping(hint: Any) -> bool:
    return any(typing.get_origin(h) is dict or h is dict for h in _options(hint))


def _is_text(hint: Any) -> bool:
    """str or str | None: the flag's word is the value as written (a template may look like YAML)."""
    return {h for h in _options(hint)} <= {str, type(None)}


def parse_scalar(text: str) -> Any:
    """A flag's word as YAML reads it (1e-5 stays text; `validation` reads it as a number)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, (dict, list)) or (value is None and text not in ("null", "~")) else value


def parse_mapping(text: str) -> dict[str, Any]:
    """A mapping flag: YAML / JSON (`{net_arch: [256, 256]}`) or `dict(net_arch=[256, 256])` with
    literal values; nothing is evaluated."""
    import yaml

    stripped = text.strip()
    if stripped.startswith("dict(") and stripped.endswith(")"):
        try:
            call = ast.parse(stripped, mode="eval").body
            if isinstance(call, ast.Call) and not call.args and all(k.arg for k in call.keywords):
                return {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError):
            pass
        raise argparse.ArgumentTypeError(f"{text!r}: expected dict(key=literal, ...) or a YAML mapping")
    try:
        value = yaml.safe_load(stripped)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a YAML / JSON mapping, e.g. '{{net_arch: [64, 64]}}'"
        )
    return value


def _bool(text: str) -> bool:
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
    return words[text.lower()]


def _describe_default(defaults: dict[str, Any]) -> str:
    """One default, or each default with the classes that have it (the most common one: "others")."""
    by_value: dict[str, list[str]] = {}
    for cls, value in defaults.items():
        shown = "null" if value is None else str(list(value) if isinstance(value, tuple) else value)
        by_value.setdefault(shown, []).append(cls)
    if len(by_value) == 1:
        return f"default {next(iter(by_value))}"
    common = max(by_value, key=lambda v: len(by_value[v]))
    parts = [f"{v} ({', '.join(c)})" for v, c in by_value.items() if v != common]
    return "default " + ", ".join([*parts, f"{common} (others)"])


def _choices(hint: Any) -> str:
    literal = [h for h in _options(hint) if typing.get_origin(h) is typing.Literal]
    return "one of " + ", ".join(str(a) for a in typing.get_args(literal[0])) if literal else ""


def add_field_flags(
    parser: argparse.ArgumentParser,
    classes: Iterable[type],
    ranges: Mapping[str, Range],
    renames: Iterable[Rename] = (),
    aliases: Mapping[str, Iterable[str]] | None = None,
    title: str = "config fields (each overrides --config)",
) -> None:
    """A flag for every field of `classes` (the first class declaring a name gives its type), plus
    hidden flags under the old names of `renames`; `aliases` adds option strings to a field's flag."""
    group = parser.add_argument_group(title)
    seen: dict[str, dict[str, Any]] = {}
    info: dict[str, tuple[Any, str]] = {}
    for cls in classes:
        hints, notes = typing.get_type_hints(cls), field_help(cls)
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, {})[cls.__name__] = _default(f)
            if f.name not in info:
                info[f.name] = (hints[f.name], notes.get(f.name, ""))
    for name, (hint, note) in info.items():
        limits = ranges.get(name)
        bounds = limits.describe() if limits is not None and limits != Range() else ""
        kind = "; ".join(x for x in (_choices(hint), bounds, _describe_default(seen[name])) if x)
        help_text = f"{note} ({kind})" if note else f"({kind})"
        options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        options += list((aliases or {}).get(name, ()))
        group.add_argument(*options, help=help_text.replace("%", "%%"), **_kwargs(name, hint))
    for rename in renames:  # a converted key (another type) was never a flag: its old name stays YAML-only
        if rename.new in info and rename.convert is None:
            old = [f"--{rename.old}"] + ([f"--{rename.old.replace('_', '-')}"] if "_" in rename.old else [])
            group.add_argument(*old, help=argparse.SUPPRESS, **_kwargs(rename.old, info[rename.new][0]))


def _kwargs(name: str, hint: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dest": DEST + name, "default": argparse.SUPPRESS}
    if hint is bool:
        return kwargs | {"nargs": "?", "const": True, "type": _bool, "metavar": "BOOL"}
    if _is_mapping(hint):
        return kwargs | {"type": parse_mapping, "metavar": "MAPPING"}
    if _is_list(hint):
        return kwargs | {"nargs": "+", "type": parse_scalar, "metavar": "VALUE"}
    if _is_text(hint):
        return kwargs | {"metavar": "TEXT"}
    return kwargs | {"type": parse_scalar, "metavar": "VALUE"}


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The field flags given on the command line, by field (or old) name."""
    return {k[len(DEST) :]: v for k, v in vars(args).items() if k.startswith(DEST)}


def check_flags(
    values: Mapping[str, Any], cls: type, ranges: Mapping[str, Range], user: str
) -> dict[str, Any]:
    """Each flag's value checked against `cls`'s field (type from its annotation, range from `ranges`);
    a flag that `cls` does not have is named with who does not use it (`user`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        if name not in names:
            raise InputError(f"--{name}: not a setting of {user} ({cls.__name__})")
        if isinstance(value, list) and not _is_list(hints[name]) and len(value) == 1:
            value = value[0]
        limits = ranges.get(f"{cls.__name__}.{name}", ranges.get(name))
        out[name] = check_value(f"--{name}", value, hints[name], limits)
    return out
