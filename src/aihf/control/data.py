"""Trajectories and preference pairs for control, their `.npz` format, and validation on load.

On-disk format (one `.npz` per data set, written by `save_trajectories` / `save_preferences`):

    observations  float32 [N, obs_dim]   all transitions of all trajectories, concatenated
    actions       float32 [N, act_dim]
    rewards       float32 [N]            true rewards; NaN everywhere when unknown (human data)
    terminated    bool    [N]            the environment ended the episode (e.g. the robot fell)
    truncated     bool    [N]            the episode was cut by a time limit
    lengths       int64   [T]            length of each trajectory; sum(lengths) == N
    env_id        str     []             the gymnasium id the data came from ('' if unknown)
    next_observations float32 [N, obs_dim]  optional: s' of each transition (needed by next-state rewards)
    final_observations float32 [T, obs_dim] instead of next_observations when s' of each transition is the
                                         next row's s within its trajectory (the usual case): the s' of
                                         each trajectory's last transition; the writer picks this form,
                                         which halves the file, and the reader rebuilds next_observations

A preference file holds the same trajectory arrays plus

    segments      int64   [P, 6]         (traj_a, start_a, end_a, traj_b, start_b, end_b), end exclusive
    labels        float32 [P]            probability that segment a is preferred over segment b

Segment return is the sum of the reward over the segment, so segments of different length are allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from aihf.errors import InputError
from aihf.io import atomic_path

TRAJECTORY_KEYS = ("observations", "actions", "rewards", "terminated", "truncated", "lengths")


@dataclass
class Trajectories:
    """A set of trajectories stored flat (transition-major) with per-trajectory lengths."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    lengths: np.ndarray
    env_id: str = ""
    next_observations: np.ndarray | None = None

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_transitions(self) -> int:
        return len(self.observations)

    def returns(self) -> np.ndarray:
        """True return of each trajectory (NaN where rewards are unknown)."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.starts) if len(self) else np.zeros(0)

    def select(self, indices: np.ndarray) -> Trajectories:
        """A new set holding the trajectories at `indices`, in that order."""
        starts = self.starts
        rows = np.concatenate([np.arange(starts[i], starts[i] + self.lengths[i]) for i in indices])
        return Trajectories(
            self.observations[rows],
            self.actions[rows],
            self.rewards[rows],
            self.terminated[rows],
            self.truncated[rows],
            self.lengths[np.asarray(indices)],
            self.env_id,
            None if self.next_observations is None else self.next_observations[rows],
        )

    @staticmethod
    def from_episodes(episodes: list[dict[str, np.ndarray]], env_id: str = "") -> Trajectories:
        """Build from a list of per-episode dicts with the keys of the file format (minus lengths)."""
        if not episodes:
            raise InputError("no episodes given: expected at least one trajectory")
        cat = {k: np.concatenate([ep[k] for ep in episodes]) for k in TRAJECTORY_KEYS[:-1]}
        return Trajectories(
            cat["observations"].astype(np.float32),
            cat["actions"].astype(np.float32),
            cat["rewards"].astype(np.float32),
            cat["terminated"].astype(bool),
            cat["truncated"].astype(bool),
            np.array([len(ep["actions"]) for ep in episodes], dtype=np.int64),
            env_id,
            np.concatenate([ep["next_observations"] for ep in episodes]).astype(np.float32)
            if all("next_observations" in ep for ep in episodes)
            else None,
        )


@dataclass
class Preferences:
    """Preference pairs over segments of `trajectories`; label = P(segment a preferred over b)."""

    trajectories: Trajectories
    segments: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, fraction: float, seed: int) -> tuple[Preferences, Preferences]:
        """Random (train, held-out) split of the pairs; held-out gets `fraction` of them."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_held = round(fraction * len(self))
        held, train = order[:n_held], order[n_held:]
        return (
            Preferences(self.trajectories, self.segments[train], self.labels[train]),
            Preferences(self.trajectories, self.segments[held], self.labels[held]),
        )


# ---------------------------------------------------------------------------------------------------
# save


def _trajectory_arrays(traj: Trajectories) -> dict[str, np.ndarray]:
    arrays = {
        "observations": traj.observations.astype(np.float32),
        "actions": traj.actions.astype(np.float32),
        "rewards": traj.rewards.astype(np.float32),
        "terminated": traj.terminated.astype(bool),
        "truncated": traj.truncated.astype(bool),
        "lengths": traj.lengths.astype(np.int64),
        "env_id": np.array(traj.env_id),
    }
    if traj.next_observations is not None:
        next_obs = traj.next_observations.astype(np.float32)
        last = np.cumsum(traj.lengths) - 1
        final = next_obs[last]
        if np.array_equal(_chain_next_observations(arrays["observations"], traj.lengths, final), next_obs):
            arrays["final_observations"] = final
        else:
            arrays["next_observations"] = next_obs
    return arrays


def _chain_next_observations(obs: np.ndarray, lengths: np.ndarray, final: np.ndarray) -> np.ndarray:
    """s' of every transition when it is the next row's s, and `final` after each trajectory's last."""
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[np.cumsum(lengths) - 1] = final
    return next_obs


def _save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def save_trajectories(path: str | os.PathLike[str], traj: Trajectories) -> None:
    _save_npz(path, _trajectory_arrays(traj))


def save_preferences(path: str | os.PathLike[str], prefs: Preferences) -> None:
    arrays = _trajectory_arrays(prefs.trajectories)
    arrays["segments"] = prefs.segments.astype(np.int64)
    arrays["labels"] = prefs.labels.astype(np.float32)
    _save_npz(path, arrays)


# ---------------------------------------------------------------------------------------------------
# load + validation


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as err:  # a corrupt or non-npz file: numpy raises several types
        raise InputError(f"{path}: not a readable .npz file ({err})") from err


def _require(arrays: dict[str, np.ndarray], path: Path, key: str, kind: str, ndim: int) -> np.ndarray:
    """Check presence, dtype kind ('f' float, 'b' bool, 'i' integer) and number of dimensions."""
    if key not in arrays:
        raise InputError(f"{path}: missing array '{key}' (have {sorted(arrays)})")
    arr = arrays[key]
    kinds = {"f": "f", "b": "b", "i": "iu"}[kind]
    if arr.dtype.kind not in kinds:
        names = {"f": "a float", "b": "a bool", "i": "an integer"}
        raise InputError(f"{path}: array '{key}' has dtype {arr.dtype}, expected {names[kind]} dtype")
    if arr.ndim != ndim:
        raise InputError(f"{path}: array '{key}' has shape {arr.shape}, expected {ndim} dimension(s)")
    return arr


def _trajectory_from_arrays(
    arrays: dict[str, np.ndarray], path: Path, obs_dim: int | None, act_dim: int | None
) -> Trajectories:
    obs = _require(arrays, path, "observations", "f", 2)
    act = _require(arrays, path, "actions", "f", 2)
    rew = _require(arrays, path, "rewards", "f", 1)
    term = _require(arrays, path, "terminated", "b", 1)
    trunc = _require(arrays, path, "truncated", "b", 1)
    lengths = _require(arrays, path, "lengths", "i", 1).astype(np.int64)
    n = len(obs)
    for key, arr in (("actions", act), ("rewards", rew), ("terminated", term), ("truncated", trunc)):
        if len(arr) != n:
            raise InputError(f"{path}: array '{key}' has {len(arr)} rows, 'observations' has {n}")
    if len(lengths) == 0:
        raise InputError(f"{path}: 'lengths' is empty: expected at least one trajectory")
    if (lengths <= 0).any():
        bad = int(np.flatnonzero(lengths <= 0)[0])
        raise InputError(f"{path}: trajectory {bad}: length {lengths[bad]}, expected a positive length")
    if lengths.sum() != n:
        raise InputError(f"{path}: 'lengths' sum to {lengths.sum()} but there are {n} transitions")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    traj_of_row = np.repeat(np.arange(len(lengths)), lengths)
    next_obs = None
    if "next_observations" in arrays:
        next_obs = _require(arrays, path, "next_observations", "f", 2)
        if next_obs.shape != obs.shape:
            raise InputError(
                f"{path}: 'next_observations' has shape {next_obs.shape}, 'observations' has {obs.shape}"
            )
    elif "final_observations" in arrays:
        final = _require(arrays, path, "final_observations", "f", 2)
        if final.shape != (len(lengths), obs.shape[1]):
            raise InputError(
                f"{path}: 'final_observations' has shape {final.shape}, expected "
                f"{(len(lengths), obs.shape[1])} (one per trajectory)"
            )
        next_obs = _chain_next_observations(obs, lengths, final.astype(obs.dtype))
    for key, arr in (("observations", obs), ("actions", act), ("next_observations", next_obs)):
        if arr is None:
            continue
        bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if len(bad_rows):
            r = int(bad_rows[0])
            raise InputError(
                f"{path}: trajectory {traj_of_row[r]}, step {r - starts[traj_of_row[r]]}: "
                f"'{key}' contains NaN or inf"
            )
    if np.isinf(rew).any():
        r = int(np.flatnonzero(np.isinf(rew))[0])
        raise InputError(
            f"{path}: trajectory {traj_of_row[r]}, step {r - starts[traj_of_row[r]]}: reward is inf"
        )
    if obs_dim is not None and obs.shape[1] != obs_dim:
        raise InputError(
            f"{path}: observations have size {obs.shape[1]}, the environment's observation size is {obs_dim}"
        )
    if act_dim is not None and act.shape[1] != act_dim:
        raise InputError(
            f"{path}: actions have size {act.shape[1]}, the environment's action size is {act_dim}"
        )
    env_id = str(arrays["env_id"]) if "env_id" in arrays else ""
    return Trajectories(
        obs.astype(np.float32),
        act.astype(np.float32),
        rew.astype(np.float32),
        term.astype(bool),
        trunc.astype(bool),
        lengths,
        env_id,
        None if next_obs is None else next_obs.astype(np.float32),
    )


def load_trajectories(
    path: str | os.PathLike[str], obs_dim: int | None = None, act_dim: int | None = None
) -> Trajectories:
    """Load and validate a trajectory file; pass the environment's sizes to check them too."""
    path = Path(path)
    return _trajectory_from_arrays(_open_npz(path), path, obs_dim, act_dim)


def load_preferences(
    path: str | os.PathLike[str], obs_dim: int | None = None, act_dim: int | None = None
) -> Preferences:
    """Load and validate a preference file (segments must lie inside their trajectories)."""
    path = Path(path)
    arrays = _open_npz(path)
    traj = _trajectory_from_arrays(arrays, path, obs_dim, act_dim)
    segments = _require(arrays, path, "segments", "i", 2).astype(np.int64)
    labels = _require(arrays, path, "labels", "f", 1)
    if segments.shape[1] != 6:
        raise InputError(
            f"{path}: 'segments' has shape {segments.shape}, expected [P, 6] "
            "(traj_a, start_a, end_a, traj_b, start_b, end_b)"
        )
    if len(labels) != len(segments):
        raise InputError(f"{path}: {len(labels)} labels for {len(segments)} segment pairs")
    if len(labels) == 0:
        raise InputError(f"{path}: no preference pairs")
    for i, row in enumerate(segments):
        for side, (t, s, e) in (("a", row[:3]), ("b", row[3:])):
            if not 0 <= t < len(traj):
                raise InputError(
                    f"{path}: preference {i}: segment {side} names trajectory {t}, file has {len(traj)}"
                )
            if not 0 <= s < e <= traj.lengths[t]:
                raise InputError(
                    f"{path}: preference {i}: segment {side} [{s}, {e}) is out of range for trajectory {t} "
                    f"of length {traj.lengths[t]}"
                )
    bad = np.flatnonzero(~np.isfinite(labels) | (labels < 0) | (labels > 1))
    if len(bad):
        raise InputError(f"{path}: preference {bad[0]}: label {labels[bad[0]]}, expected a value in [0, 1]")
    return Preferences(traj, segments, labels.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# shipped data and Minari


def shipped_data_dir(env_id: str) -> Path | None:
    """Directory of the demonstrations/preferences shipped with the package for `env_id`, if any."""
    root = resources.files("aihf") / "data" / "control" / env_id
    path = Path(str(root))
    return path if (path / "demos.npz").is_file() and (path / "prefs.npz").is_file() else None


def resolve_data(env_id: str, demos: str | None, prefs: str | None) -> tuple[str | None, str | None]:
    """The given paths, falling back on the data shipped with the package for `env_id`."""
    shipped = shipped_data_dir(env_id)
    if shipped is not None:
        demos = demos or str(shipped / "demos.npz")
        prefs = prefs or str(shipped / "prefs.npz")
    return demos, prefs


def load_minari(dataset_id: str, max_episodes: int | None = None) -> Trajectories:
    """Import demonstrations from a locally available Minari dataset (needs `pip install aihf[minari]`)."""
    try:
        import minari
    except ImportError as err:
        raise InputError(
            f"importing Minari dataset '{dataset_id}' needs the optional package minari: "
            "pip install 'aihf[minari]'"
        ) from err
    dataset = minari.load_dataset(dataset_id)
    episodes = []
    for k, ep in enumerate(dataset.iterate_episodes()):
        if max_episodes is not None and k >= max_episodes:
            break
        # Minari stores T+1 observations per episode (the final one included); keep the T that acted.
        episodes.append(
            {
                "observations": np.asarray(ep.observations)[:-1],
                "actions": np.asarray(ep.actions),
                "rewards": np.asarray(ep.rewards),
                "terminated": np.asarray(ep.terminations),
                "truncated": np.asarray(ep.truncations),
            }
        )
    env_spec = getattr(dataset, "env_spec", None)
    return Trajectories.from_episodes(episodes, env_id=getattr(env_spec, "id", "") or "")
