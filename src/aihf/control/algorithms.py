"""The compared methods as classes that plug into one shared training loop (`train.Trainer.learn`),
in the way stable-baselines3 and imitation give each algorithm a class: a method says what data it
needs, what it does once before the first SAC step, and what it does after each chunk of SAC steps.

`ALGORITHMS` (name -> class) is the one list of methods: the config validates `algo` against it, the
command line offers its names and the benchmark tables print `ALGORITHM_LABELS`.

    aihf       reward from demonstrations (weight alpha) and preferences, learned jointly with SAC
    pref-only  the same joint loop with alpha = 0
    demo-only  the same joint loop without preferences (maximum-likelihood IRL)
    rlhf       BC-initialised actor, reward fitted on the preferences, then SAC on that frozen reward
    bc         behaviour cloning only (no environment steps)
    sac-true   SAC on the environment's true reward (the oracle)
    ipl        Inverse Preference Learning: SAC's critic fit to the preferences (`ipl.py`, `ipl_sbx.py`)

Kept free of torch and stable-baselines3 imports (the config and the command line read the table);
the hooks get what they may use in a `Run`, never the trainer itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aihf.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from aihf.control.backends import Backend
    from aihf.control.config import AIHFControlConfig
    from aihf.control.data import Trajectories
    from aihf.control.reward_learning import PreferenceTensors, RewardLearner


@dataclass
class Run:
    """What a method's hooks may use: the run's settings, its SAC model, the data and the learned reward."""

    cfg: AIHFControlConfig
    model: OffPolicyAlgorithm
    backend: Backend
    rng: np.random.Generator  # the run's data RNG (BC batches, reward-step batches), saved in checkpoints
    demos: Trajectories | None
    prefs: PreferenceTensors | None  # the training pairs (held-out ones are the reward learner's)
    reward: RewardLearner | None  # None unless the method `learns_reward`


class Algorithm:
    """A method of the comparison; the defaults are plain SAC on the environment's reward."""

    name: ClassVar[str]
    label: ClassVar[str]  # its row name in result tables
    backends: ClassVar[tuple[str, ...]] = ("sb3", "sbx")  # SAC implementations it runs on
    needs_demos: ClassVar[bool] = False
    needs_prefs: ClassVar[bool] = False
    uses_prefs: ClassVar[bool] = False  # loads preferences if given (training or held-out diagnostics)
    learns_reward: ClassVar[bool] = False  # SAC optimises r_theta (LearnedRewardVecEnv)
    uses_env: ClassVar[bool] = True  # False: no environment steps at all
    needs_next_states: ClassVar[bool] = False  # the preference file must hold 'next_observations'

    def sac_class(self, backend: Backend) -> type | None:
        """A SAC subclass to use instead of the backend's own (None: the backend's)."""
        return None

    def setup(self, run: Run) -> None:
        """Once, before the first SAC step of a fresh run (not on resume)."""

    def attach(self, run: Run) -> None:
        """Whenever the SAC model is created or loaded: hand it what it needs but does not save."""

    def after_policy_step(self, run: Run) -> dict[str, float]:
        """After each chunk of SAC steps; returns statistics to log."""
        return {}


class TrueReward(Algorithm):
    """SAC on the environment's true reward: the oracle."""

    name, label = "sac-true", "SAC on the true reward (oracle)"


class JointReward(Algorithm):
    """AIHF and its ablations: after each SAC chunk, a reward step on demonstrations (vs the agent's
    latest rollouts in the replay buffer) and / or preferences, then the replay buffer is re-scored."""

    learns_reward = uses_prefs = True
    use_demos: ClassVar[bool] = True
    use_prefs: ClassVar[bool] = True

    def after_policy_step(self, run: Run) -> dict[str, float]:
        reward, model = run.reward, run.model
        assert reward is not None
        agent = reward.agent_samples(model.replay_buffer, model.num_timesteps) if self.use_demos else None
        stats = reward.step(run.cfg.reward_updates_per_iter, agent, use_prefs=self.use_prefs)
        reward.rescore(model.replay_buffer)
        return stats


class AIHF(JointReward):
    name, label = "aihf", "AIHF"
    needs_demos = needs_prefs = True


class PrefOnly(JointReward):
    name, label = "pref-only", "preferences only (alpha = 0)"
    needs_prefs = True
    use_demos = False


class DemoOnly(JointReward):
    name, label = "demo-only", "demonstrations only (ML-IRL)"
    needs_demos = True
    use_prefs = False


def clone_demonstrations(run: Run) -> None:
    """Fit the actor's deterministic action to the demonstrations (MSE in SAC's [-1, 1] scale)."""
    import numpy as np

    cfg, model, demos = run.cfg, run.model, run.demos
    assert demos is not None
    target = np.clip(model.policy.scale_action(demos.actions), -0.999, 0.999)
    run.backend.clone(model, demos.observations, target, cfg.bc_steps, cfg.bc_lr, cfg.bc_batch_size, run.rng)


class BehaviourCloning(Algorithm):
    name, label = "bc", "behaviour cloning"
    needs_demos = True
    uses_env = False

    def setup(self, run: Run) -> None:
        clone_demonstrations(run)


class RLHF(Algorithm):
    """The paper's staged baseline: BC actor, reward from preferences only, then SAC on it (frozen)."""

    name, label = "rlhf", "RLHF (BC -> RM -> SAC)"
    needs_demos = needs_prefs = uses_prefs = learns_reward = True

    def setup(self, run: Run) -> None:
        assert run.reward is not None
        clone_demonstrations(run)
        run.reward.step(run.cfg.rlhf_reward_steps)


class IPL(Algorithm):
    """Inverse Preference Learning: no reward net; SAC's critic learns from the preferences through
    its implicit reward (`ipl.py` on sb3, `ipl_sbx.py` on sbx). Online, from a random policy, on the
    preference data only."""

    name, label = "ipl", "IPL (inverse preference learning)"
    needs_prefs = uses_prefs = needs_next_states = True

    def sac_class(self, backend: Backend) -> type | None:
        if backend.name == "sbx":
            from aihf.control.ipl_sbx import IPLSBXSAC

            return IPLSBXSAC
        from aihf.control.ipl import IPLSAC

        return IPLSAC

    def attach(self, run: Run) -> None:
        run.model.set_preferences(run.prefs, run.cfg)


# the order of result tables and of `aihf control bench`'s default --algos
ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (AIHF, RLHF, PrefOnly, DemoOnly, BehaviourCloning, TrueReward, IPL)
}
ALGORITHM_LABELS: dict[str, str] = {name: cls.label for name, cls in ALGORITHMS.items()}


def make_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise InputError(f"algo={name!r}: expected one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]()
