"""Tiny Pendulum data built locally: random-policy episodes, split into 'demonstrations' (the better
half by true return) and preference pairs over segments labelled by true return."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from aihf.control.data import Preferences, Trajectories, save_preferences, save_trajectories

ENV = "Pendulum-v1"


def random_episodes(n: int, seed: int, length: int = 60) -> Trajectories:
    env = gym.make(ENV, max_episode_steps=length)
    env.action_space.seed(seed)
    episodes = []
    for ep in range(n):
        obs, _ = env.reset(seed=seed + ep)
        rows = {
            k: []
            for k in ("observations", "actions", "rewards", "terminated", "truncated", "next_observations")
        }
        done = False
        while not done:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(rows, (obs, action, reward, terminated, truncated, next_obs)):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
        episodes.append({k: np.asarray(v) for k, v in rows.items()})
    return Trajectories.from_episodes(episodes, env_id=ENV)


def segment_prefs(traj: Trajectories, n_pairs: int, seg: int, seed: int) -> Preferences:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_pairs):
        a, b = rng.choice(len(traj), size=2, replace=False)
        sa, sb = rng.integers(0, traj.lengths[a] - seg + 1), rng.integers(0, traj.lengths[b] - seg + 1)
        rows.append((a, sa, sa + seg, b, sb, sb + seg))
    segments = np.array(rows, dtype=np.int64)
    starts = traj.starts
    ret = lambda t, s, e: traj.rewards[starts[t] + s : starts[t] + e].sum()  # noqa: E731
    labels = np.array([float(ret(*r[:3]) > ret(*r[3:])) for r in segments], dtype=np.float32)
    return Preferences(traj, segments, labels)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    everything = random_episodes(8, seed=123)
    order = np.argsort(everything.returns())
    demos = everything.select(order[4:])
    pool = everything.select(order[:4])
    prefs = segment_prefs(pool, 60, 15, seed=0)
    root = tmp_path_factory.mktemp("control_data")
    save_trajectories(root / "demos.npz", demos)
    save_preferences(root / "prefs.npz", prefs)
    return {
        "demos": demos,
        "prefs": prefs,
        "demos_path": root / "demos.npz",
        "prefs_path": root / "prefs.npz",
    }
