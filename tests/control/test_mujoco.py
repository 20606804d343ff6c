"""End-to-end checks on a MuJoCo task (slow: run with `pytest -m slow tests/control`)."""

import json

import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from aihf.control.backends import get_backend
from aihf.control.collect import CollectConfig, make_preferences, rollout
from aihf.control.config import AIHFControlConfig
from aihf.control.data import Trajectories
from aihf.control.envs import make_env
from aihf.control.train import train


class _Interrupt(BaseCallback):
    def _on_step(self) -> bool:
        if self.num_timesteps == 260:
            raise KeyboardInterrupt
        return True


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sb3", "sbx"])
def test_hopper_resume_is_exact_with_bootstrapped_falls(backend, tmp_path):
    random_policy = SAC(
        "MlpPolicy", make_env("Hopper-v5", 0), policy_kwargs={"net_arch": [8]}, seed=0, device="cpu"
    )
    episodes = Trajectories.from_episodes(rollout(random_policy, "Hopper-v5", 0, 12), env_id="Hopper-v5")
    order = np.argsort(episodes.returns())
    demos = episodes.select(order[8:])
    prefs = make_preferences(
        episodes.select(order[:8]),
        CollectConfig(num_preferences=40, segment_length=5),
        np.random.default_rng(0),
    )
    cfg = AIHFControlConfig(
        env_id="Hopper-v5",
        n_timesteps=320,
        steps_per_iter=80,
        learning_starts=100,
        batch_size=32,
        eval_episodes=1,
        termination="bootstrap",
        tensorboard=False,
        reward_use_next_obs=True,
        reward_use_done=True,
        seed=1,
        backend=backend,
    )
    full = train(cfg, tmp_path / "full", demos, prefs, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", demos, prefs, callback=_Interrupt(), progress=False)
    resumed = train(None, tmp_path / "cut", resume=True, progress=False)
    assert resumed["eval_return_mean"] == full["eval_return_mean"]
    assert (tmp_path / "full" / "curve.csv").read_text() == (tmp_path / "cut" / "curve.csv").read_text()
    sac = get_backend(backend).sac_class
    a, b = sac.load(tmp_path / "full" / "policy.zip"), sac.load(tmp_path / "cut" / "policy.zip")
    obs = demos.observations[:50]
    np.testing.assert_array_equal(get_backend(backend).act(a, obs), get_backend(backend).act(b, obs))
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["env"] == "Hopper-v5"
