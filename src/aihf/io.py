"""Atomic file output: a crash or Ctrl-C never leaves a half-written result or checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and for directories (a directory target is replaced whole).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    inner = tmp / target.name
    try:
        yield inner
        if target.is_dir() and inner.is_dir():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(inner, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_path(path: str | os.PathLike[str], is_file: bool = False, option: str = "--out") -> None:
    """Refuse an output path that cannot be written, before any work: an existing file where a directory
    is wanted (or the reverse), a file among its parents, a broken or looping symbolic link on the way,
    or a parent directory that is not writable. Creates nothing."""
    from aihf.errors import InputError

    target = Path(path)
    existing = target
    while not existing.exists():
        if existing.is_symlink():  # exists() is False for a link to nothing, or a link loop
            raise InputError(f"{option} {target}: {_link_problem(existing)}")
        existing = existing.parent
    if target.exists() and target.is_dir() == is_file:
        wanted, found = ("a file", "a directory") if is_file else ("a directory", "an existing file")
        raise InputError(f"{option} {target}: is {found}, expected {wanted}")
    if existing == target and not target.is_dir():
        existing = target.parent
    if not existing.is_dir():
        raise InputError(f"{option} {target}: {existing} is a file, so no directory can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {target}: {existing} is not writable")


def _link_problem(link: Path) -> str:
    """Why a symbolic link cannot be followed: a loop, or a target that does not exist."""
    try:
        os.stat(link)
    except FileNotFoundError:
        return f"{link} is a broken symbolic link (to {os.readlink(link)})"
    except OSError as err:
        return f"{link} is a symbolic link that cannot be followed ({(err.strerror or '').lower()})"
    return f"{link} is a symbolic link"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoint manifests, downloaded weights)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(
    path: str | os.PathLike[str], missing: str | None = None, field: str | None = None
) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (blank lines skipped); a bad line is named by file and line.

    `missing`: what to do when the file is absent (said in the error); `field`: a key every row must
    hold as a string."""
    from aihf.errors import InputError

    path = Path(path)
    if missing and not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: missing ({missing})")
    rows = []
    for number, row in read_jsonl_lines(path):
        if field is not None and not isinstance(row.get(field), str):
            raise InputError(f"{path}, line {number}, field {field!r}: expected a string")
        rows.append(row)
    return rows


def read_jsonl_lines(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line of a JSON-lines file. A directory, FIFO,
    broken link, unreadable or non-UTF-8 file, or a line that is not a JSON object: one line naming it."""
    from aihf.errors import InputError
    from aihf.safety import check_input_file, user_file_errors

    path = Path(path)
    check_input_file(path)  # a FIFO would hang the read
    with user_file_errors(path):
        text = path.read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows
