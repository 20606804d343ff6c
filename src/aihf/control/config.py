"""`AIHFControlConfig`: every option of `aihf control train`, loadable from YAML; CLI flags override."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, Literal

from aihf.control.algorithms import ALGORITHMS
from aihf.errors import InputError
from aihf.flags import Rename, canonical
from aihf.validation import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    Range,
    check_value,
    load_yaml,
    validate_config,
)

ALGOS = tuple(ALGORITHMS)  # the method names, from the one table in algorithms.py
BACKENDS = ("sb3", "sbx")


@dataclass
class AIHFControlConfig:
    """Options of the control experiments. Defaults follow the paper (appendix A.1.1) where it gives them.

    `algo` picks the method, one of `algorithms.ALGORITHMS` (aihf, its ablations and the baselines, each
    described there); all share the SAC settings and the budget `n_timesteps` (environment steps).

    The lower level is SAC on `reward_scale * r_theta` with entropy coefficient `ent_coef`: a fixed
    number by default (the KL weight to the uniform policy, as in the paper's Spinning Up SAC), or
    "auto" / "auto_<init>" for stable-baselines3's automatic tuning towards a target entropy.
    """

    # gymnasium id with a Box action space; MODULE:ID imports MODULE first (gymnasium's convention: its
    # code runs), so name only modules you trust
    env_id: str = "Pendulum-v1"
    algo: str = "aihf"  # the method: aihf, an ablation or a baseline (algorithms.ALGORITHMS)
    seed: int = 0
    n_timesteps: int = 20_000  # environment steps of SAC (the budget)
    device: str = "cpu"  # torch device of SAC and the reward net: cpu, auto or cuda[:N]
    backend: str = "sb3"  # SAC implementation: sb3 (PyTorch) or sbx (JAX, faster on CPU)
    # SAC (stable-baselines3); the paper uses (64, 64) ReLU networks and 5k SAC steps per iteration
    # policy_kwargs as RL Zoo writes it: {net_arch: [64, 64]} (or {pi: [...], qf: [...]}), n_critics
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=lambda: {"net_arch": [64, 64]})
    learning_rate: float = 3e-4  # SAC Adam learning rate
    batch_size: int = 256  # SAC minibatch size
    learning_starts: int = 1000  # random-action steps before SAC updates
    gamma: float = 0.99  # SAC discount factor
    ent_coef: float | str = 0.2  # fixed (Spinning Up's 0.2) or "auto" for automatic tuning
    # SB3's update schedule: `gradient_steps` SAC updates after every `train_freq` environment steps.
    # Equal values keep one update per step but batch them (sbx runs them in one jitted loop: faster).
    train_freq: int = 1
    gradient_steps: int = 1
    steps_per_iter: int = 5000  # SAC steps per AIHF iteration (paper: 5000)
    # reward net and reward step
    reward_hidden: tuple[int, ...] = (64, 64)
    reward_use_next_obs: bool = False
    reward_use_done: bool = False
    reward_lr: float = 1e-4  # reward Adam learning rate (paper: 1e-4)
    reward_weight_decay: float = 0.0
    reward_updates_per_iter: int = 20  # reward updates per iteration
    reward_batch_size: int = 256  # demonstration and agent transitions per reward update
    pref_batch_size: int = 64  # preference pairs per reward update
    agent_window: int = 0  # agent transitions = the last N in the replay buffer; 0 means steps_per_iter
    alpha: float = 1.0  # weight of the demonstration term
    demo_form: Literal["linear", "logistic"] = "linear"
    # the demonstration term over per-transition means, or (the paper's eq. 32-34) over each whole
    # trajectory's discounted reward sum: demonstrations vs the agent's completed episodes (README)
    demo_term: Literal["mean", "trajectory"] = "mean"
    centering_coef: float = 0.01  # weight of the mean R^2 penalty
    grad_clip: float = 10.0
    pref_holdout: float = 0.1  # fraction of preference pairs kept out of training for diagnostics
    # episode endings with a learned reward: 'env' keeps terminations, 'bootstrap' treats them as
    # time-outs (SAC bootstraps through falls); reward_offset is added to every learned reward
    termination: Literal["env", "bootstrap"] = "env"
    reward_offset: float = 0.0
    reward_scale: float = 1.0  # SAC optimises reward_scale * r_theta (+ offset): 1/beta of the lower level
    # baselines
    bc_steps: int = 2000
    bc_lr: float = 1e-3
    bc_batch_size: int = 256
    rlhf_reward_steps: int = 2000
    ipl_chi2_coef: float = 0.5  # IPL's regulariser: 1 / (4 c) * mean implicit reward^2 (the authors' 0.5)
    ipl_pref_batch_size: int = 8  # preference pairs per IPL critic update (beside batch_size replay rows)
    # evaluation and logging
    eval_interval: int = 0  # environment steps between evaluations; 0 means every iteration
    eval_episodes: int = 5  # evaluation episodes
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.ent_coef = parse_ent_coef(self.ent_coef)
        validate_config(self, RANGES)  # every field's type and range (RANGES, below the class)
        self.policy_kwargs = check_policy_kwargs(self.policy_kwargs)
        self.reward_hidden = tuple(int(h) for h in self.reward_hidden)
        if self.backend not in BACKENDS:
            raise InputError(f"field 'backend' = {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.algo not in ALGOS:
            raise InputError(f"field 'algo' = {self.algo!r}: expected one of {', '.join(ALGOS)}")
        runs_on = ALGORITHMS[self.algo].backends
        if self.backend not in runs_on:
            raise InputError(f"field 'algo' = {self.algo!r} runs on backend {', '.join(runs_on)} only")
        if self.demo_term == "trajectory" and self.demo_form != "linear":
            raise InputError(
                "field 'demo_term' = 'trajectory' needs demo_form 'linear' (the logistic form pairs samples)"
            )
        for name in ("steps_per_iter", "n_timesteps"):  # SB3 collects whole rounds: no overshoot
            if getattr(self, name) % self.train_freq:
                raise InputError(
                    f"field 'train_freq' = {self.train_freq} must divide {name} ({getattr(self, name)}): "
                    "SAC collects train_freq steps at a time, so an iteration would overrun its steps"
                )
        _check_device(self.device)

    @property
    def ent_coef_label(self) -> str:
        """How the KL weight was set, for result tables."""
        if isinstance(self.ent_coef, str):
            return f"auto-tuned ({self.ent_coef})"
        return f"fixed {self.ent_coef:g}"

    @property
    def iterations(self) -> int:
        return -(-self.n_timesteps // self.steps_per_iter)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> AIHFControlConfig:
        values = canonical(values, RENAMES, source, warn=False)  # e.g. a saved run's old names
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown option(s) {', '.join(unknown)}")
        try:
            return cls(**values)
        except InputError as err:
            raise InputError(f"{source}: {err}") from None


def parse_ent_coef(value: float | str) -> float | str:
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
    raise InputError(
        f"field 'ent_coef' = {value!r}: expected a positive number, 'auto' or 'auto_<initial value>'"
    )


def check_policy_kwargs(value: dict[str, Any]) -> dict[str, Any]:
    """SAC's `policy_kwargs` as plain data (RL Zoo's YAML form, nothing evaluated): `net_arch`, a list of
    layer widths or {pi: [...], qf: [...]}, and optionally `n_critics`."""
    where = "field 'policy_kwargs'"
    unknown = sorted(set(value) - {"net_arch", "n_critics"})
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; expected net_arch, n_critics")
    arch = value.get("net_arch", [64, 64])
    parts = arch if isinstance(arch, dict) else {"net_arch": arch}
    if isinstance(arch, dict) and set(arch) != {"pi", "qf"}:
        raise InputError(
            f"{where}: net_arch = {arch!r}: expected a list of widths or {{pi: [...], qf: [...]}}"
        )
    for name, widths in parts.items():
        check_value(f"{where}, {name}", widths, list[int], AT_LEAST_1)
    if "n_critics" in value:
        check_value(f"{where}, n_critics", value["n_critics"], int, AT_LEAST_1)
    return {
        **value,
        "net_arch": {k: list(v) for k, v in arch.items()} if isinstance(arch, dict) else list(arch),
    }


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> AIHFControlConfig:
    """Defaults < the environment's preset < the YAML file < `overrides` (e.g. the flags given).

    The environment that picks the preset is the one named in `overrides`, else in the YAML file.
    """
    values = canonical(load_yaml(path), RENAMES, str(path)) if path is not None else {}
    env_id = overrides.get("env_id") or values.get("env_id") or AIHFControlConfig.env_id
    return AIHFControlConfig.from_dict({**preset(str(env_id)), **values, **overrides}, str(path or "config"))


def _check_device(device: str) -> None:
    """A torch device that exists here (or SB3's "auto"), so SAC does not fail on its first tensor."""
    import torch

    try:
        usable = device == "auto" or torch.device(device).type == "cpu" or torch.cuda.is_available()
    except RuntimeError:
        usable = False
    if not usable:
        raise InputError(f"field 'device' = {device!r}: expected cpu, auto, or cuda[:N] where a GPU is")


# Keys renamed to SB3 / RL Zoo's name for the same meaning: the old name is still read (YAML, flags,
# saved runs), with one deprecation line where a person wrote it.
RENAMES: tuple[Rename, ...] = (
    Rename("total_steps", "n_timesteps"),
    Rename("sac_lr", "learning_rate"),
    Rename("sac_batch_size", "batch_size"),
    Rename("sac_hidden", "policy_kwargs", lambda widths: {"net_arch": widths}),
)


# Accepted range of every numeric field of AIHFControlConfig (`aihf.validation` checks the types).
RANGES: dict[str, Range] = {
    "seed": SEED,
    "n_timesteps": Range(1, 10**8),  # SAC's replay buffer holds them all
    "learning_rate": POSITIVE,
    "batch_size": AT_LEAST_1,
    "learning_starts": NON_NEGATIVE,
    "gamma": FRACTION,
    "train_freq": AT_LEAST_1,
    "gradient_steps": AT_LEAST_1,
    "steps_per_iter": AT_LEAST_1,
    "reward_hidden": AT_LEAST_1,
    "reward_lr": POSITIVE,
    "reward_weight_decay": NON_NEGATIVE,
    "reward_updates_per_iter": NON_NEGATIVE,
    "reward_batch_size": AT_LEAST_1,
    "pref_batch_size": AT_LEAST_1,
    "agent_window": NON_NEGATIVE,
    "alpha": NON_NEGATIVE,
    "centering_coef": NON_NEGATIVE,
    "grad_clip": NON_NEGATIVE,
    "pref_holdout": Range(0, 1, high_open=True),
    "reward_offset": Range(),
    "reward_scale": POSITIVE,
    "bc_steps": NON_NEGATIVE,
    "bc_lr": POSITIVE,
    "bc_batch_size": AT_LEAST_1,
    "rlhf_reward_steps": NON_NEGATIVE,
    "eval_interval": NON_NEGATIVE,
    "eval_episodes": AT_LEAST_1,
    "ipl_chi2_coef": POSITIVE,
    "ent_coef": POSITIVE,  # when a number; "auto" / "auto_<init>" is checked by parse_ent_coef
    "ipl_pref_batch_size": AT_LEAST_1,
}


# Scaled-down settings that fit a small CPU budget; the paper's scale is 5k SAC steps per iteration
# and about 1M steps in all. `preset(env_id)` gives the starting point of `aihf control bench`.
PRESETS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {
        "n_timesteps": 6000,
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
        "n_timesteps": 100_000,
        "steps_per_iter": 5000,
        "learning_starts": 5000,
        "reward_lr": 1e-4,
        "termination": "env",  # not "bootstrap": SAC then bootstraps from unseen fallen states
        "eval_episodes": 5,
    },
}


def preset(env_id: str) -> dict[str, Any]:
    return dict(PRESETS.get(env_id, {}))
