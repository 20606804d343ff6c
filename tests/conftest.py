"""Fixtures shared by every domain's tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aihf.threads import limit_threads

# The suite's models are tiny: one thread runs them about as fast as several, and beside another job
# much faster (the suite took 1021 s for its first 234 tests with torch's default threads beside one
# single-threaded job). Set before torch or JAX load; subprocesses inherit it; OMP_NUM_THREADS wins.
limit_threads(1)


def _damage(target: Path, how: str) -> None:
    """Damage one checkpoint file: cut it in half ("truncate"), flip a byte ("flip"), or delete it."""
    if how == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif how == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()


@pytest.fixture
def damage_file() -> Callable[[Path, str], None]:
    """damage_file(path, "truncate" | "flip" | "delete"), for the corrupt-checkpoint tests."""
    return _damage
