"""Backends (BC warm start, fixed entropy), the per-transition centring term and IPL's critic update."""

import numpy as np
import pytest
import torch

from aihf.control.algorithms import make_algorithm
from aihf.control.backends import get_backend, sac_kwargs
from aihf.control.config import ALGOS, AIHFControlConfig
from aihf.control.envs import make_env
from aihf.control.reward_learning import PreferenceTensors, RewardLearner, segment_returns


def test_every_configurable_algorithm_has_an_object():
    assert [make_algorithm(name).name for name in ALGOS] == list(ALGOS)


@pytest.mark.parametrize("backend_name", ["sb3", "sbx"])
def test_behaviour_cloning_moves_the_actor_to_the_demonstrations(backend_name, tiny_data):
    cfg = AIHFControlConfig(backend=backend_name, policy_kwargs={"net_arch": [32, 32]}, n_timesteps=100)
    backend = get_backend(backend_name)
    model = backend.make(make_env("Pendulum-v1", 0), 0, "cpu", **sac_kwargs(cfg))
    obs = tiny_data["demos"].observations
    target = 0.8 * np.tanh(obs[:, :1] - obs[:, 2:3])  # a deterministic "expert", in SAC's [-1, 1] scale

    def error() -> float:
        return float(np.mean((model.policy.scale_action(backend.act(model, obs)) - target) ** 2))

    before = error()
    backend.clone(model, obs, target, 300, 3e-3, 64, np.random.default_rng(0))
    assert error() < 0.1 * before
    if backend_name == "sbx":  # the fixed default entropy coefficient reaches sbx's SAC too
        assert type(model.ent_coef).__name__ == "ConstantEntropyCoef" and model.ent_coef_init == 0.2


def test_entropy_coefficient_is_fixed_unless_auto():
    backend = get_backend("sb3")
    for ent_coef, tuned in ((0.2, False), ("auto", True)):
        cfg = AIHFControlConfig(ent_coef=ent_coef, n_timesteps=100)
        assert sac_kwargs(cfg)["ent_coef"] == ent_coef  # what either backend's SAC receives
        model = backend.make(make_env("Pendulum-v1", 0), 0, "cpu", **sac_kwargs(cfg))
        assert (model.ent_coef_optimizer is not None) == tuned
        if not tuned:
            assert float(model.ent_coef_tensor) == pytest.approx(0.2)


def test_centring_is_over_transitions_not_segment_sums(tiny_data):
    """Review finding: the penalty mixed per-transition rewards with 15-step segment sums."""
    cfg = AIHFControlConfig(pref_batch_size=16, centering_coef=0.1, reward_hidden=(8,))
    prefs = PreferenceTensors.build(tiny_data["prefs"], cfg)
    torch.manual_seed(0)
    learner = RewardLearner(cfg, 3, 1, np.random.default_rng(0), prefs=prefs)
    net = learner.net
    with torch.no_grad():
        net.mlp[-1].bias.fill_(1.0)  # rewards near 1: a segment sum would be near 15
    learner.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # frozen: read the penalty only
    stats = learner.step(1)
    pick = np.random.default_rng(0).integers(len(prefs.segments), size=cfg.pref_batch_size)
    with torch.no_grad():
        _, _, per_step = segment_returns(net, prefs.trans, prefs.starts, prefs.segments[pick])
    assert stats["centering"] == pytest.approx(0.1 * float(per_step.pow(2).mean()), rel=1e-5)
    assert stats["centering"] < 0.1 * 4  # a segment-sum term would be about 0.1 * 15^2


def test_ipl_critic_learns_the_preferences(tiny_data):
    """IPL's implicit reward Q(s, a) - gamma V(s') comes to order the preference pairs like their labels."""
    from aihf.control.ipl import IPLSAC
    from aihf.control.reward_learning import segment_rows, sum_segments

    cfg = AIHFControlConfig(
        algo="ipl", policy_kwargs={"net_arch": [32, 32]}, n_timesteps=400, ipl_pref_batch_size=16
    )
    backend = get_backend("sb3")
    model = backend.make(
        make_env("Pendulum-v1", 0), 0, "cpu", IPLSAC, **{**sac_kwargs(cfg), "learning_starts": 100}
    )
    prefs = PreferenceTensors.build(tiny_data["prefs"], cfg)
    model.set_preferences(prefs, cfg)
    decided = (prefs.labels != 0.5).numpy()

    def accuracy() -> float:
        rows, seg_id = segment_rows(prefs.starts, prefs.segments)
        data = model._ipl
        idx = torch.as_tensor(rows)
        with torch.no_grad():
            reward = model._implicit_rewards(
                data["obs"][idx],
                data["act"][idx],
                data["next_obs"][idx],
                data["done"][idx],
                model.ent_coef_tensor,
            )[0][:, 0]
        ret_a, ret_b = sum_segments(reward, seg_id, len(prefs.segments))
        agree = ((ret_a > ret_b) == (prefs.labels > 0.5)).numpy()
        return float(agree[decided].mean())

    model.learn(400)
    assert accuracy() > 0.8
    assert model.logger.name_to_value["train/preference_loss"] < np.log(2)
