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


def check_env_id(env_id: str) -> None:
    """Refuse, before gymnasium imports anything, an id of the wrong shape or (without `module:`) one
    not in gymnasium's registry. `module:Name` imports `module` by gymnasium's convention (that runs
    its code, as any plugin); its Name must still have an id's shape (`[namespace/]Name[-vN]`)."""
    from gymnasium.envs.registration import parse_env_id, registry

    if not isinstance(env_id, str) or not env_id:
        raise InputError(f"--env {env_id!r}: expected a gymnasium id such as Pendulum-v1")
    module, _, name = env_id.rpartition(":")
    try:
        parse_env_id(name)
    except gym.error.Error:
        raise InputError(
            f"--env {env_id}: {name!r} is not a gymnasium id ([namespace/]Name[-vN], e.g. Pendulum-v1)"
        ) from None
    if module and not all(part.isidentifier() for part in module.split(".")):
        raise InputError(f"--env {env_id}: {module!r} is not a Python module name")
    if not module and name not in registry:
        from difflib import get_close_matches

        close = get_close_matches(name, list(registry), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"--env {env_id}: not a registered gymnasium environment{hint}")


def env_dims(env_id: str) -> tuple[int, int]:
    """Observation and action sizes; a clear error for an unknown id or a non-Box action space."""
    check_env_id(env_id)
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise InputError(f"--env {env_id}: not a registered gymnasium environment ({err})") from err
    except ImportError as err:  # `module:Name` whose module does not import
        raise InputError(f"--env {env_id}: cannot import its module ({type(err).__name__}: {err})") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        raise InputError(f"--env {env_id}: action space is {env.action_space}, SAC needs a Box action space")
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    env.close()
    return obs_dim, act_dim


def _plain(value: Any) -> bool:
    """Data that a checkpoint stores as JSON or arrays (never an object to unpickle)."""
    if value is None or isinstance(value, (bool, int, float, str, np.ndarray, np.generic)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _layers(env: gym.Env) -> list[gym.Env]:
    """The env and every wrapper below it, outermost first."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def env_snapshot(env: gym.Env) -> dict[str, Any]:
    """Everything needed to continue an episode bit-exactly, as plain data: each layer's (wrappers' and
    the env's) plain attributes (time-limit counter, Monitor's episode records, Pendulum's state, ...),
    the env's RNG state and, for MuJoCo, the physics state. Restored into a freshly made env of the same
    id, so no env object is ever pickled."""
    unwrapped = env.unwrapped
    snap: dict[str, Any] = {
        "layers": [{k: v for k, v in vars(layer).items() if _plain(v)} for layer in _layers(env)],
        "np_random": unwrapped.np_random.bit_generator.state,
    }
    if hasattr(unwrapped, "data") and hasattr(unwrapped, "model"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm-start, time, ...: bit-exact
        state = np.empty(mujoco.mj_stateSize(unwrapped.model, spec))
        mujoco.mj_getState(unwrapped.model, unwrapped.data, state, spec)
        snap["mujoco"] = state
    return snap


def env_restore(env: gym.Env, snap: dict[str, Any]) -> None:
    """Put a snapshot taken by `env_snapshot` into `env`, a fresh env made the same way."""
    layers = _layers(env)
    if len(layers) != len(snap["layers"]):
        raise InputError(
            f"environment snapshot has {len(snap['layers'])} layers, the environment {len(layers)}"
        )
    for layer, saved in zip(layers, snap["layers"]):
        vars(layer).update(saved)
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = snap["np_random"]
    env.unwrapped.np_random = generator
    if "mujoco" in snap:
        import mujoco

        unwrapped = env.unwrapped
        mujoco.mj_setState(
            unwrapped.model, unwrapped.data, np.asarray(snap["mujoco"]), mujoco.mjtState.mjSTATE_INTEGRATION
        )
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
