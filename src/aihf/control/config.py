"""`AIHFControlConfig`: every option of `aihf control train`, loadable from YAML; CLI flags override."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from aihf.errors import InputError

ALGOS = ("aihf", "rlhf", "bc", "pref-only", "demo-only", "sac-true", "ipl")
BACKENDS = ("sb3", "sbx")


@dataclass
class AIHFControlConfig:
    """Options of the control experiments. Defaults follow the paper (appendix A.1.1) where it gives them.

    `algo` picks the method; all share the SAC settings and the budget `total_steps` (environment steps):
      aihf       reward from demonstrations (weight `alpha`) and preferences, learned jointly with SAC
      pref-only  the same joint loop with alpha = 0 (preferences only)
      demo-only  the same joint loop without preferences (maximum-likelihood IRL)
      rlhf       BC-initialised actor, reward fitted on preferences first, then SAC on that frozen reward
      bc         behaviour cloning on the demonstrations only (no environment steps)
      sac-true   SAC on the environment's true reward (the oracle)
      ipl        Inverse Preference Learning (Hejna & Sadigh 2023): no reward net, SAC's critic is fit to
                 the preferences through its implicit reward Q(s, a) - gamma V(s') (README.md)

    The lower level is SAC on `reward_scale * r_theta` with entropy coefficient `ent_coef`: a fixed
    number by default (the KL weight to the uniform policy, as in the paper's Spinning Up SAC), or
    "auto" / "auto_<init>" for stable-baselines3's automatic tuning towards a target entropy.
    """

    env_id: str = "Pendulum-v1"
    algo: str = "aihf"
    seed: int = 0
    total_steps: int = 20_000
    device: str = "cpu"
    backend: str = "sb3"  # SAC implementation: sb3 (PyTorch) or sbx (JAX, faster on CPU)
    # SAC (stable-baselines3); the paper uses (64, 64) ReLU networks and 5k SAC steps per iteration
    sac_hidden: tuple[int, ...] = (64, 64)
    sac_lr: float = 3e-4
    sac_batch_size: int = 256
    learning_starts: int = 1000
    gamma: float = 0.99
    ent_coef: float | str = 0.2  # fixed (Spinning Up's 0.2) or "auto" for automatic tuning
    steps_per_iter: int = 5000
    # reward net and reward step
    reward_hidden: tuple[int, ...] = (64, 64)
    reward_use_next_obs: bool = False
    reward_use_done: bool = False
    reward_lr: float = 1e-4
    reward_weight_decay: float = 0.0
    reward_updates_per_iter: int = 20
    reward_batch_size: int = 256  # demonstration and agent transitions per reward update
    pref_batch_size: int = 64  # preference pairs per reward update
    agent_window: int = 0  # agent transitions = the last N in the replay buffer; 0 means steps_per_iter
    alpha: float = 1.0
    demo_form: str = "linear"
    centering_coef: float = 0.01
    grad_clip: float = 10.0
    pref_holdout: float = 0.1  # fraction of preference pairs kept out of training for diagnostics
    # episode endings with a learned reward: 'env' keeps terminations, 'bootstrap' treats them as
    # time-outs (SAC bootstraps through falls); reward_offset is added to every learned reward
    termination: str = "env"
    reward_offset: float = 0.0
    reward_scale: float = 1.0  # SAC optimises reward_scale * r_theta (+ offset): 1/beta of the lower level
    # baselines
    bc_steps: int = 2000
    bc_lr: float = 1e-3
    bc_batch_size: int = 256
    rlhf_reward_steps: int = 2000
    ipl_chi2_coef: float = 0.5  # IPL's regulariser: 1 / (4 c) * mean implicit reward^2 (the authors' 0.5)
    ipl_pref_batch_size: int = 8  # preference pairs per IPL critic update (beside sac_batch_size replay rows)
    # evaluation and logging
    eval_interval: int = 0  # environment steps between evaluations; 0 means every iteration
    eval_episodes: int = 5
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.sac_hidden = tuple(int(h) for h in self.sac_hidden)
        self.reward_hidden = tuple(int(h) for h in self.reward_hidden)
        self.ent_coef = _ent_coef(self.ent_coef)
        if self.backend not in BACKENDS:
            raise InputError(f"backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.algo not in ALGOS:
            raise InputError(f"algo={self.algo!r}: expected one of {', '.join(ALGOS)}")
        if self.algo == "ipl" and self.backend != "sb3":
            raise InputError("algo=ipl runs on backend=sb3 only (its critic update is written for PyTorch)")
        if self.demo_form not in ("linear", "logistic"):
            raise InputError(f"demo_form={self.demo_form!r}: expected 'linear' or 'logistic'")
        if self.termination not in ("env", "bootstrap"):
            raise InputError(f"termination={self.termination!r}: expected 'env' or 'bootstrap'")
        for name in (
            "total_steps",
            "steps_per_iter",
            "eval_episodes",
            "reward_batch_size",
            "pref_batch_size",
            "ipl_pref_batch_size",
        ):
            if getattr(self, name) <= 0:
                raise InputError(f"{name}={getattr(self, name)}: expected a positive integer")
        if self.alpha < 0:
            raise InputError(f"alpha={self.alpha}: expected alpha >= 0")
        if self.ipl_chi2_coef <= 0:
            raise InputError(f"ipl_chi2_coef={self.ipl_chi2_coef}: expected a positive number")
        if not 0 <= self.pref_holdout < 1:
            raise InputError(f"pref_holdout={self.pref_holdout}: expected a fraction in [0, 1)")

    @property
    def ent_coef_label(self) -> str:
        """How the KL weight was set, for result tables."""
        if isinstance(self.ent_coef, str):
            return f"auto-tuned ({self.ent_coef})"
        return f"fixed {self.ent_coef:g}"

    @property
    def iterations(self) -> int:
        return -(-self.total_steps // self.steps_per_iter)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> AIHFControlConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown option(s) {', '.join(unknown)}")
        return cls(**values)


def _ent_coef(value: float | str) -> float | str:
    """A positive number, or "auto" / "auto_<initial value>" (stable-baselines3's convention)."""
    text = str(value)
    if text == "auto" or text.startswith("auto_"):
        initial = text.removeprefix("auto").removeprefix("_") or "1"
        try:
            ok = float(initial) > 0
        except ValueError:
            ok = False
        if ok:
            return text
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if number > 0:
            return number
    raise InputError(f"ent_coef={value!r}: expected a positive number, 'auto' or 'auto_<initial value>'")


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> AIHFControlConfig:
    """Defaults < the environment's preset < the YAML file < `overrides` (e.g. the flags given).

    The environment that picks the preset is the one named in `overrides`, else in the YAML file.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(values, dict):
            raise InputError(f"{path}: expected a mapping of option: value")
    env_id = overrides.get("env_id") or values.get("env_id") or AIHFControlConfig.env_id
    return AIHFControlConfig.from_dict({**preset(str(env_id)), **values, **overrides}, str(path or "config"))


# Scaled-down settings that fit a small CPU budget; the paper's scale is 5k SAC steps per iteration
# and about 1M steps in all. `preset(env_id)` gives the starting point of `aihf control bench`.
PRESETS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {
        "total_steps": 6000,
        "steps_per_iter": 500,
        "learning_starts": 500,
        "reward_scale": 10.0,  # learned rewards are ~20x smaller than the true ones (centring); see README
        "reward_lr": 1e-3,
        "reward_updates_per_iter": 20,
        "bc_steps": 1000,
        "rlhf_reward_steps": 1000,
        "eval_episodes": 5,
    },
    "Hopper-v5": {
        "total_steps": 100_000,
        "steps_per_iter": 5000,
        "learning_starts": 5000,
        "reward_lr": 1e-4,
        "termination": "bootstrap",
        "eval_episodes": 5,
    },
}


def preset(env_id: str) -> dict[str, Any]:
    return dict(PRESETS.get(env_id, {}))
