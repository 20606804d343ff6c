"""The compared methods as objects that plug into one shared training loop (`train.Trainer.learn`),
in the way stable-baselines3 and imitation give each algorithm a class: a method says what data it
needs, what it does once before the first SAC step, and what it does after each chunk of SAC steps.

    aihf       reward from demonstrations (weight alpha) and preferences, learned jointly with SAC
    pref-only  the same joint loop with alpha = 0
    demo-only  the same joint loop without preferences (maximum-likelihood IRL)
    rlhf       BC-initialised actor, reward fitted on the preferences, then SAC on that frozen reward
    bc         behaviour cloning only (no environment steps)
    sac-true   SAC on the environment's true reward (the oracle)
    ipl        Inverse Preference Learning: SAC whose critic is fit to the preferences (`ipl.py`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aihf.control.backends import Backend
from aihf.control.reward import rescore_replay_buffer
from aihf.control.reward_learning import buffer_transitions, reward_step
from aihf.errors import InputError

if TYPE_CHECKING:  # annotations only: train imports this module
    from aihf.control.train import Trainer


class Algorithm:
    """A method of the comparison; the defaults are plain SAC on the environment's reward."""

    needs_demos: bool = False
    needs_prefs: bool = False
    uses_prefs: bool = False  # loads preferences if given (training or held-out diagnostics)
    learns_reward: bool = False  # SAC optimises r_theta (LearnedRewardVecEnv)
    uses_env: bool = True  # False: no environment steps at all
    needs_next_states: bool = False  # the preference file must hold 'next_observations'

    def __init__(self, name: str) -> None:
        self.name = name

    def sac_class(self, backend: Backend) -> type | None:
        """A SAC subclass to use instead of the backend's own (None: the backend's)."""
        return None

    def setup(self, trainer: Trainer) -> None:
        """Once, before the first SAC step of a fresh run (not on resume)."""

    def attach(self, trainer: Trainer) -> None:
        """Whenever the SAC model is created or loaded: hand it what it needs but does not save."""

    def after_policy_step(self, trainer: Trainer) -> dict[str, float]:
        """After each chunk of SAC steps; returns statistics to log."""
        return {}


class TrueReward(Algorithm):
    """SAC on the environment's true reward: the oracle."""


class JointReward(Algorithm):
    """AIHF and its ablations: after each SAC chunk, a reward step on demonstrations (vs the agent's
    latest transitions) and / or preferences, then the replay buffer is re-scored with the new reward."""

    learns_reward = True
    uses_prefs = True

    def __init__(self, name: str, use_demos: bool, use_prefs: bool) -> None:
        super().__init__(name)
        self.use_demos = self.needs_demos = use_demos
        self.use_prefs = self.needs_prefs = use_prefs

    def after_policy_step(self, trainer: Trainer) -> dict[str, float]:
        cfg, model = trainer.cfg, trainer.model
        stats = reward_step(
            trainer.reward_net,
            trainer.reward_optimizer,
            cfg,
            trainer.rng,
            trainer.demo_trans if self.use_demos else None,
            buffer_transitions(model, cfg.agent_window or cfg.steps_per_iter),
            trainer.prefs_train if self.use_prefs else None,
            cfg.alpha if self.use_demos else 0.0,
            cfg.reward_updates_per_iter,
        )
        rescore_replay_buffer(model.replay_buffer, trainer.reward_net, cfg.reward_offset, cfg.reward_scale)
        return stats


def clone_demonstrations(trainer: Trainer) -> None:
    """Fit the actor's deterministic action to the demonstrations (MSE in SAC's [-1, 1] scale)."""
    cfg, model, demos = trainer.cfg, trainer.model, trainer.demos
    target = np.clip(model.policy.scale_action(demos.actions), -0.999, 0.999)
    trainer.backend.clone(
        model, demos.observations, target, cfg.bc_steps, cfg.bc_lr, cfg.bc_batch_size, trainer.rng
    )


class BehaviourCloning(Algorithm):
    needs_demos = True
    uses_env = False

    def setup(self, trainer: Trainer) -> None:
        clone_demonstrations(trainer)


class RLHF(Algorithm):
    """The paper's staged baseline: BC actor, reward from preferences only, then SAC on it (frozen)."""

    needs_demos = needs_prefs = uses_prefs = learns_reward = True

    def setup(self, trainer: Trainer) -> None:
        clone_demonstrations(trainer)
        reward_step(
            trainer.reward_net,
            trainer.reward_optimizer,
            trainer.cfg,
            trainer.rng,
            None,
            None,
            trainer.prefs_train,
            0.0,
            trainer.cfg.rlhf_reward_steps,
        )


class IPL(Algorithm):
    """Inverse Preference Learning: no reward net; SAC's critic learns from the preferences through
    its implicit reward (see `ipl.py`). Online, from a random policy, on the preference data only."""

    needs_prefs = uses_prefs = needs_next_states = True

    def sac_class(self, backend: Backend) -> type | None:
        from aihf.control.ipl import IPLSAC  # PyTorch: the config allows backend=sb3 only

        return IPLSAC

    def attach(self, trainer: Trainer) -> None:
        trainer.model.set_preferences(trainer.prefs_train, trainer.cfg)


def make_algorithm(name: str) -> Algorithm:
    algorithms: dict[str, Algorithm] = {
        "aihf": JointReward("aihf", use_demos=True, use_prefs=True),
        "pref-only": JointReward("pref-only", use_demos=False, use_prefs=True),
        "demo-only": JointReward("demo-only", use_demos=True, use_prefs=False),
        "rlhf": RLHF("rlhf"),
        "bc": BehaviourCloning("bc"),
        "sac-true": TrueReward("sac-true"),
        "ipl": IPL("ipl"),
    }
    if name not in algorithms:
        raise InputError(f"algo={name!r}: expected one of {', '.join(algorithms)}")
    return algorithms[name]
