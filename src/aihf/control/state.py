"""SAC's replay buffer in a checkpoint without pickle: an npz of its filled rows, read with
`allow_pickle=False` (the rest of the run state goes through `aihf.state`). Only stable-baselines3's
`.zip` (policy, critics, optimisers) holds pickled parts (README: resume only checkpoints you made)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from aihf.errors import InputError
from aihf.state import load_npz

_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay(path: Path, buffer: ReplayBuffer) -> None:
    """The filled rows of SAC's replay buffer (the rest of a fresh buffer is zeros, as here)."""
    rows = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {key: getattr(buffer, key)[:rows] for key in _REPLAY_ARRAYS}
    with open(path, "wb") as fh:  # a file object: np.savez would add ".npz" to a temporary name
        np.savez(fh, pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **arrays)


def load_replay(path: Path, buffer: ReplayBuffer) -> None:
    """The saved rows into `buffer`. A larger buffer (a resume that extends n_timesteps) is no longer full:
    it goes on filling after them, as the buffer of a run started with the larger budget would (SAC
    samples rows uniformly, so their order does not matter)."""
    saved = load_npz(path)
    try:
        rows, pos, full = len(saved["rewards"]), int(saved["pos"]), bool(saved["full"])
        for key in _REPLAY_ARRAYS:
            getattr(buffer, key)[:rows] = saved[key]
        grown = full and buffer.buffer_size > rows
        buffer.pos, buffer.full = (rows, False) if grown else (pos, full)
    except (KeyError, ValueError) as err:
        raise InputError(f"{path}: does not fit this run's replay buffer ({err})") from None
