"""Seeded environments and their exact snapshots (for bit-exact resume)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from aihf.errors import InputError


def make_env(env_id: str, seed: int) -> DummyVecEnv:
    """A seeded one-env DummyVecEnv with a Monitor, so episode statistics are true returns."""
    env_dims(env_id)
    venv = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
    venv.seed(seed)
    return venv


def env_dims(env_id: str) -> tuple[int, int]:
    """Observation and action sizes; a clear error for an unknown id or a non-Box action space."""
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise InputError(f"--env {env_id}: not a registered gymnasium environment ({err})") from err
    if not isinstance(env.action_space, gym.spaces.Box):
        raise InputError(f"--env {env_id}: action space is {env.action_space}, SAC needs a Box action space")
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    env.close()
    return obs_dim, act_dim


def env_snapshot(env: gym.Env) -> dict[str, Any]:
    """Everything needed to continue an episode bit-exactly. MuJoCo envs re-create themselves when
    unpickled, so their physics state and RNG are stored separately."""
    unwrapped = env.unwrapped
    snap: dict[str, Any] = {"env": env, "np_random": unwrapped.np_random.bit_generator.state}
    if hasattr(unwrapped, "data") and hasattr(unwrapped, "model"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm-start, time, ...: bit-exact
        state = np.empty(mujoco.mj_stateSize(unwrapped.model, spec))
        mujoco.mj_getState(unwrapped.model, unwrapped.data, state, spec)
        snap["mujoco"] = state
    return snap


def env_restore(snap: dict[str, Any]) -> gym.Env:
    env = snap["env"]
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = snap["np_random"]
    env.unwrapped.np_random = generator
    if "mujoco" in snap:
        import mujoco

        unwrapped = env.unwrapped
        mujoco.mj_setState(
            unwrapped.model, unwrapped.data, snap["mujoco"], mujoco.mjtState.mjSTATE_INTEGRATION
        )
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
    return env
