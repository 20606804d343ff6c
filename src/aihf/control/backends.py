"""SAC backends: stable-baselines3 (PyTorch) or sbx-rl (JAX, the same API, ~2x faster on CPU).

Both share SB3's numpy replay buffer, VecEnv, `learn()`, `save()` and `load()`, so the AIHF loop, the
learned-reward wrapper and replay re-scoring are backend-free. What differs, and lives here: building
the model, the deterministic action, behaviour cloning of the actor, and the RNG state outside numpy /
torch (sbx keeps JAX PRNG keys) that an exact resume must restore.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from aihf.control.config import BACKENDS, AIHFControlConfig
from aihf.errors import InputError


def sac_kwargs(cfg: AIHFControlConfig) -> dict[str, Any]:
    """The run's SAC settings, in the constructor arguments both backends share."""
    return {
        "learning_rate": cfg.learning_rate,
        "buffer_size": max(cfg.n_timesteps, 1),
        "learning_starts": cfg.learning_starts,
        "batch_size": cfg.batch_size,
        "gamma": cfg.gamma,
        "ent_coef": cfg.ent_coef,
        "train_freq": cfg.train_freq,
        "gradient_steps": cfg.gradient_steps,
        "policy_kwargs": dict(cfg.policy_kwargs),
    }


class Backend(Protocol):
    name: str
    sac_class: type[OffPolicyAlgorithm]

    def make(
        self, env: VecEnv, seed: int, device: str, sac_class: type | None = None, **kwargs: Any
    ) -> OffPolicyAlgorithm: ...
    def load(
        self, path, env: VecEnv, device: str, sac_class: type | None = None, buffer_size: int | None = None
    ) -> OffPolicyAlgorithm: ...
    def act(self, model: OffPolicyAlgorithm, obs: np.ndarray) -> np.ndarray: ...
    def clone(
        self, model, obs: np.ndarray, scaled_actions: np.ndarray, steps: int, lr: float, batch: int, rng
    ) -> None: ...
    def rng_state(self, model: OffPolicyAlgorithm) -> dict[str, Any]: ...
    def set_rng_state(self, model: OffPolicyAlgorithm, state: dict[str, Any]) -> None: ...


class SB3Backend:
    """stable-baselines3 SAC (PyTorch); runs on `device` (cpu or cuda)."""

    name = "sb3"

    @property
    def sac_class(self) -> type[OffPolicyAlgorithm]:
        from stable_baselines3 import SAC

        return SAC

    def make(self, env, seed, device, sac_class=None, **kwargs):
        return (sac_class or self.sac_class)("MlpPolicy", env, seed=seed, device=device, **kwargs)

    def load(self, path, env, device, sac_class=None, buffer_size=None):
        # force_reset=False keeps the saved last observation: the restored env continues its episode;
        # buffer_size: a resume that extends n_timesteps gets a larger (empty) buffer to load into
        sized = {} if buffer_size is None else {"buffer_size": buffer_size}
        return (sac_class or self.sac_class).load(path, env=env, device=device, force_reset=False, **sized)

    @torch.no_grad()
    def act(self, model, obs):
        """Deterministic actions for a batch of observations, in the environment's scale. Uses the
        policy's own `obs_to_tensor`, so the actor may live on a GPU."""
        tensor = model.policy.obs_to_tensor(np.asarray(obs, dtype=np.float32))[0]
        scaled = model.actor(tensor, deterministic=True).cpu().numpy()
        return model.policy.unscale_action(scaled)

    def clone(self, model, obs, scaled_actions, steps, lr, batch, rng):
        """MSE of the actor's deterministic action to the demonstrated one, in SAC's [-1, 1] scale."""
        obs_t = model.policy.obs_to_tensor(np.asarray(obs, dtype=np.float32))[0]
        target = torch.as_tensor(scaled_actions, dtype=torch.float32, device=obs_t.device)
        optimizer = torch.optim.Adam(model.actor.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.as_tensor(rng.integers(len(obs_t), size=batch), device=obs_t.device)
            loss = torch.nn.functional.mse_loss(model.actor(obs_t[idx], deterministic=True), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def rng_state(self, model):
        return {}

    def set_rng_state(self, model, state):
        return None


class SBXBackend:
    """sbx-rl SAC (JAX, jit-compiled updates); CPU or whatever device JAX was installed for."""

    name = "sbx"

    @property
    def sac_class(self) -> type[OffPolicyAlgorithm]:
        from sbx import SAC

        return SAC

    def make(self, env, seed, device, sac_class=None, **kwargs):
        return (sac_class or self.sac_class)("MlpPolicy", env, seed=seed, **kwargs)

    def load(self, path, env, device, sac_class=None, buffer_size=None):
        sized = {} if buffer_size is None else {"buffer_size": buffer_size}
        return (sac_class or self.sac_class).load(path, env=env, force_reset=False, **sized)

    def act(self, model, obs):
        from sbx.common.policies import BaseJaxPolicy

        scaled = np.asarray(
            BaseJaxPolicy.select_action(model.policy.actor_state, np.asarray(obs, np.float32))
        )
        return model.policy.unscale_action(np.clip(scaled, -1, 1))

    def clone(self, model, obs, scaled_actions, steps, lr, batch, rng):
        import jax
        import jax.numpy as jnp
        import optax

        state = model.policy.actor_state
        apply_fn = state.apply_fn
        tx = optax.adam(lr)

        @jax.jit
        def update(params, opt_state, o, a):
            loss_fn = lambda p: jnp.mean((apply_fn(p, o).mode() - a) ** 2)  # noqa: E731
            grads = jax.grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        params, opt_state = state.params, tx.init(state.params)
        obs = np.asarray(obs, dtype=np.float32)
        scaled_actions = np.asarray(scaled_actions, dtype=np.float32)
        for _ in range(steps):
            idx = rng.integers(len(obs), size=batch)
            params, opt_state = update(params, opt_state, obs[idx], scaled_actions[idx])
        model.policy.actor_state = state.replace(params=params)

    def rng_state(self, model):
        keys = (model.key, model.policy.key, model.policy.noise_key)
        return {"jax_keys": [np.asarray(k) for k in keys]}

    def set_rng_state(self, model, state):
        import jax.numpy as jnp

        model.key, model.policy.key, model.policy.noise_key = (jnp.asarray(k) for k in state["jax_keys"])


def jax_cache_dir() -> Path:
    """Where XLA's compiled programs are kept: the user's JAX_COMPILATION_CACHE_DIR, else
    $XDG_CACHE_HOME/aihf/jax (~/.cache/aihf/jax)."""
    given = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "aihf" / "jax"


def use_jax_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk (JAX's persistent cache), every program however quick to
    compile: each sbx SAC run compiles the same few dozen programs again, and on one CPU thread that was
    about half of a short run (a 2000-step Pendulum run: 41.7 s of CPU time, 20.5 s with the cache
    warm; same returns). Takes effect before the process's first compilation; a cached program is the
    program XLA would compile, so results do not change. Settings the user made in the environment win."""
    settings: dict[str, Any] = {
        "jax_compilation_cache_dir": str(jax_cache_dir()),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    if "jax" not in sys.modules:  # JAX reads these variables when it loads
        for key, value in settings.items():
            os.environ.setdefault(key.upper(), str(value))
        return
    import jax

    for key, value in settings.items():
        if key.upper() not in os.environ:
            jax.config.update(key, value)


def get_backend(name: str) -> Backend:
    if name == "sb3":
        return SB3Backend()
    if name == "sbx":
        use_jax_compilation_cache()
        try:
            import sbx  # noqa: F401
        except ImportError as err:
            raise InputError("backend=sbx needs sbx-rl: pip install 'aihf[control]'") from err
        return SBXBackend()
    raise InputError(f"backend={name!r}: expected one of {', '.join(BACKENDS)}")
