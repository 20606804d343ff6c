"""Checkpoint integrity, shared by the LM and control trainers.

A checkpoint directory is complete when its `manifest.json` (size and SHA-256 of every other file)
is present and every file matches it. The manifest is written last, so a save that was cut short has
none. Before resuming, `verify` checks the manifest; a missing, truncated or altered file (weights,
optimiser, replay buffer, RNG state) stops the run with one line naming that file. The run is never
resumed from a damaged checkpoint, nor silently from an older one: the message names the previous
complete checkpoint when there is one, for the user to pass explicitly.

Old checkpoints are pruned by renaming them to a hidden `.NAME.deleting` first and deleting after, so
an interrupted prune never leaves a half-deleted directory under a checkpoint's name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.io import sha256_file, write_json
from aihf.safety import escape_terminal, safe_child

MANIFEST = "manifest.json"
_DELETING = ".deleting"


class CheckpointError(InputError):
    """A checkpoint that is incomplete or damaged; the message names the file."""


def write_manifest(directory: str | os.PathLike[str]) -> None:
    """Record size and SHA-256 of every file under `directory`; call it after everything else is saved."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {
        p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files
    }
    write_json(root / MANIFEST, {"files": entries})


def verify(directory: str | os.PathLike[str]) -> None:
    """Raise CheckpointError naming the first missing, truncated or altered file of a checkpoint.

    Every name in the manifest must resolve inside the checkpoint (`safety.safe_child`): a crafted
    manifest cannot make the check read, or the message name, a file elsewhere.
    """
    root = Path(directory)
    manifest = root / MANIFEST
    if not root.is_dir():
        raise CheckpointError(f"{escape_terminal(str(root))}: no such checkpoint directory")
    if not manifest.is_file():
        raise CheckpointError(
            f"{escape_terminal(str(root))}: incomplete checkpoint "
            f"({MANIFEST} missing: the save did not finish)"
        )
    entries = _read_manifest(manifest)
    for name, entry in entries.items():
        try:
            path = safe_child(root, name, what=f"{MANIFEST} entry")
        except InputError as err:
            raise CheckpointError(str(err)) from None
        shown = escape_terminal(str(path))
        if not path.is_file():
            raise CheckpointError(f"{shown}: missing from the checkpoint (deleted after it was saved)")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(f"{shown}: {size} bytes, the checkpoint saved {entry['size']} (truncated?)")
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{shown}: contents differ from those saved (damaged checkpoint file)")


def _read_manifest(manifest: Path) -> dict[str, dict[str, Any]]:
    """The manifest's entries, each `{"size": int, "sha256": str}`; any other shape is damage."""
    damaged = CheckpointError(f"{escape_terminal(str(manifest))}: damaged checkpoint manifest")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, OSError):  # UnicodeDecodeError is a ValueError
        raise damaged from None
    if not isinstance(entries, dict):
        raise damaged
    for entry in entries.values():
        if not (
            isinstance(entry, dict)
            and type(entry.get("size")) is int
            and isinstance(entry.get("sha256"), str)
        ):
            raise damaged
    return entries


def is_complete(directory: str | os.PathLike[str]) -> bool:
    try:
        verify(directory)
    except CheckpointError:
        return False
    return True


def newest_complete(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run directory, LM (`OUT/checkpoints/checkpoint-N`) or control
    (`OUT/checkpoint`); None if there is none. Named when a run stops, for the user to resume from."""
    root = Path(out_dir)
    numbered = [p for p in root.glob("checkpoints/checkpoint-*") if p.name.rpartition("-")[2].isdigit()]
    candidates = [*sorted(numbered, key=lambda p: int(p.name.rpartition("-")[2])), root / "checkpoint"]
    complete = [p for p in candidates if p.is_dir() and is_complete(p)]
    return complete[-1] if complete else None


def remove_dir(path: str | os.PathLike[str]) -> None:
    """Delete a directory by renaming it out of the way first (an interrupted delete leaves only a
    hidden `.NAME.deleting`, which `remove_leftovers` clears later)."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}{_DELETING}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(directories: Iterable[Path]) -> None:
    for path in directories:
        remove_dir(path)


def remove_leftovers(root: str | os.PathLike[str]) -> None:
    """Finish deletes that an interrupt cut short."""
    for leftover in Path(root).glob(f".*{_DELETING}"):
        shutil.rmtree(leftover, ignore_errors=True)


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSON-lines log; a torn last line (the process died while writing it) is dropped.

    A bad line anywhere else is damage, not an interrupted write, and raises InputError naming it.
    """
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise InputError(f"{path}, line {number}: not valid JSON (damaged log)") from None
    return records
