"""The learned reward r_theta(s, a [, s', done]), its save/load, and the VecEnv wrapper that swaps it in.

The wrapper keeps the environment's own reward in `info["true_reward"]` (and a `Monitor` below it keeps
true episode returns), so SB3's `rollout/ep_rew_mean` and our evaluation always report the true return
while SAC optimises the learned one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from torch import nn

from aihf.errors import InputError
from aihf.io import atomic_path, write_json

SMALL_BATCH = 64  # rows up to which `predict` runs the MLP in numpy


class RewardNet(nn.Module):
    """MLP reward on (s, a), optionally also on the next state s' and the termination flag."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        use_next_obs: bool = False,
        use_done: bool = False,
    ) -> None:
        super().__init__()
        self.config = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(hidden),
            "use_next_obs": use_next_obs,
            "use_done": use_done,
        }
        in_dim = obs_dim + act_dim + (obs_dim if use_next_obs else 0) + (1 if use_done else 0)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor | None = None,
        done: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = [obs, act]
        if self.config["use_next_obs"]:
            if next_obs is None:
                raise ValueError("this reward net takes the next observation: pass next_obs")
            parts.append(next_obs)
        if self.config["use_done"]:
            if done is None:
                raise ValueError("this reward net takes the termination flag: pass done")
            parts.append(done.reshape(-1, 1).to(obs.dtype))
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)

    @torch.no_grad()
    def predict(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        next_obs: np.ndarray | None = None,
        done: np.ndarray | None = None,
        chunk: int = 65536,
    ) -> np.ndarray:
        """Rewards of numpy transitions, in chunks, without gradients. Inputs the net does not take
        are not converted: the learned-reward env calls this at every step, where a few rows go through
        the MLP in numpy (torch's per-call overhead was most of a step's reward cost)."""
        inputs = (
            obs,
            act,
            next_obs if self.config["use_next_obs"] else None,
            done if self.config["use_done"] else None,
        )
        if len(obs) <= SMALL_BATCH:
            return self._predict_numpy(inputs)
        if len(obs) <= chunk:
            return self(
                *(None if x is None else torch.as_tensor(x, dtype=torch.float32) for x in inputs)
            ).numpy()
        out = np.empty(len(obs), dtype=np.float32)
        for i in range(0, len(obs), chunk):
            sl = slice(i, i + chunk)
            out[sl] = self(
                *(None if x is None else torch.as_tensor(x[sl], dtype=torch.float32) for x in inputs)
            ).numpy()
        return out

    def _predict_numpy(self, inputs: tuple[np.ndarray | None, ...]) -> np.ndarray:
        """The forward pass in float32 numpy, on the current weights (views, not copies)."""
        parts = [np.asarray(x, dtype=np.float32).reshape(len(inputs[0]), -1) for x in inputs if x is not None]
        x = np.concatenate(parts, axis=-1)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                x = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
            else:  # ReLU, the only other layer the constructor builds
                x = np.maximum(x, 0.0)
        return x[:, 0]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write `reward_config.json` and `reward.pt` into `directory` (atomically, as a whole)."""
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            write_json(tmp / "reward_config.json", self.config)
            torch.save(self.state_dict(), tmp / "reward.pt")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> RewardNet:
        directory = Path(directory)
        config_path = directory / "reward_config.json"
        if not config_path.is_file():
            raise InputError(f"{directory}: no reward_config.json: not a saved reward net")
        net = cls(**json.loads(config_path.read_text()))
        net.load_state_dict(torch.load(directory / "reward.pt", map_location="cpu", weights_only=True))
        return net


class LearnedRewardVecEnv(VecEnvWrapper):
    """Replace the environment's reward by `reward_offset + reward_scale * r_theta(s, a [, s', terminated])`.

    `reward_scale` is 1/beta of the lower-level problem max E[R] - beta KL: the learned reward is only
    defined up to scale by the data (and kept small by centring), so SAC may need it magnified.

    `termination="env"` keeps the environment's terminations (the zero value after a fall then acts as
    a survival bonus or penalty set by the reward's sign). `termination="bootstrap"` marks every ending as
    a time-out for SB3 (`TimeLimit.truncated`), so SAC bootstraps through falls from the value of fallen
    states, which no transition leaves; on Hopper-v5 that extrapolation made agents fall at once (see
    the package README). (With "bootstrap" a reward net with `use_done` always sees done = 0.)
    """

    def __init__(
        self,
        venv: VecEnv,
        reward_net: RewardNet,
        reward_offset: float = 0.0,
        termination: str = "env",
        reward_scale: float = 1.0,
    ) -> None:
        super().__init__(venv)
        if termination not in ("env", "bootstrap"):
            raise InputError(f"termination={termination!r}: expected 'env' or 'bootstrap'")
        self.reward_net = reward_net
        self.reward_offset = reward_offset
        self.reward_scale = reward_scale
        self.termination = termination
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._last_obs = self.venv.reset()
        return self._last_obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self):  # type: ignore[override]
        obs, true_rewards, dones, infos = self.venv.step_wait()
        next_obs = obs.copy()
        terminated = np.zeros(len(dones), dtype=np.float32)
        for i, (done, info) in enumerate(zip(dones, infos)):
            info["true_reward"] = float(true_rewards[i])
            if done:
                next_obs[i] = info["terminal_observation"]
                if self.termination == "bootstrap":
                    info["TimeLimit.truncated"] = True
                # what the replay buffer will record too, so re-scoring sees the same input
                terminated[i] = float(not info.get("TimeLimit.truncated", False))
        assert self._last_obs is not None and self._actions is not None, "step before reset"
        rewards = self.reward_offset + self.reward_scale * self.reward_net.predict(
            self._last_obs.astype(np.float32), self._actions, next_obs, terminated
        )
        self._last_obs = obs
        return obs, rewards, dones, infos


def buffer_actions_to_env(buffer: ReplayBuffer, actions: np.ndarray) -> np.ndarray:
    """SAC stores actions rescaled to [-1, 1]; the reward net sees them as the environment does."""
    low, high = buffer.action_space.low, buffer.action_space.high
    return (low + 0.5 * (actions + 1.0) * (high - low)).astype(np.float32)


def rescore_replay_buffer(
    buffer: ReplayBuffer, reward_net: RewardNet, reward_offset: float = 0.0, reward_scale: float = 1.0
) -> int:
    """Overwrite the stored rewards with the current r_theta, in place; returns the number re-scored.

    SAC's targets read rewards from the buffer, so after a reward step the old ones are stale.
    """
    size = buffer.buffer_size if buffer.full else buffer.pos
    if size == 0:
        return 0
    obs = buffer.observations[:size].reshape(size * buffer.n_envs, -1)
    act = buffer_actions_to_env(buffer, buffer.actions[:size].reshape(size * buffer.n_envs, -1))
    next_obs = buffer.next_observations[:size].reshape(size * buffer.n_envs, -1)
    terminated = (buffer.dones[:size] * (1 - buffer.timeouts[:size])).reshape(-1)
    rewards = reward_offset + reward_scale * reward_net.predict(obs, act, next_obs, terminated)
    buffer.rewards[:size] = rewards.reshape(size, buffer.n_envs)
    return size * buffer.n_envs
