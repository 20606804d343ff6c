import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from aihf.control.config import AIHFControlConfig
from aihf.control.envs import make_env
from aihf.control.reward import LearnedRewardVecEnv, RewardNet, buffer_actions_to_env, rescore_replay_buffer
from aihf.control.reward_learning import PreferenceTensors, RewardLearner, trajectory_transitions


def test_reward_net_inputs_and_save_load(tmp_path):
    net = RewardNet(3, 1, hidden=(8,), use_next_obs=True, use_done=True)
    obs, act, nxt, done = torch.randn(5, 3), torch.randn(5, 1), torch.randn(5, 3), torch.zeros(5)
    out = net(obs, act, nxt, done)
    assert out.shape == (5,)
    with pytest.raises(ValueError, match="next_obs"):
        net(obs, act)
    net.save_pretrained(tmp_path / "rm")
    again = RewardNet.from_pretrained(tmp_path / "rm")
    torch.testing.assert_close(again(obs, act, nxt, done), out)


def test_wrapper_swaps_reward_and_keeps_true_reward():
    torch.manual_seed(0)
    net = RewardNet(3, 1, hidden=(16,))
    venv = LearnedRewardVecEnv(make_env("Pendulum-v1", seed=0), net, reward_offset=2.0)
    raw = make_env("Pendulum-v1", seed=0)
    obs, raw_obs = venv.reset(), raw.reset()
    np.testing.assert_array_equal(obs, raw_obs)
    for _ in range(5):
        action = np.array([[0.3]], dtype=np.float32)
        expected = 2.0 + net.predict(obs.astype(np.float32), action)
        obs, reward, _, infos = venv.step(action)
        _, true_reward, _, _ = raw.step(action)
        np.testing.assert_allclose(reward, expected, rtol=1e-6)
        assert infos[0]["true_reward"] == pytest.approx(float(true_reward[0]))
        assert abs(reward[0] - true_reward[0]) > 1e-3  # really swapped


def test_replay_buffer_is_rescored_in_place():
    torch.manual_seed(0)
    net = RewardNet(3, 1, hidden=(16,))
    model = SAC(
        "MlpPolicy",
        LearnedRewardVecEnv(make_env("Pendulum-v1", 0), net),
        learning_starts=50,
        batch_size=16,
        buffer_size=1000,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    model.learn(120)
    buf = model.replay_buffer
    # the rewards stored so far are those of the net when they were collected
    actions = buffer_actions_to_env(buf, buf.actions[:120, 0])
    assert np.abs(actions).max() > 1.0  # Pendulum's actions live in [-2, 2], SAC stores them in [-1, 1]
    before = net.predict(buf.observations[:120, 0], actions)
    np.testing.assert_allclose(buf.rewards[:120, 0], before, rtol=1e-5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    assert rescore_replay_buffer(buf, net, reward_offset=1.0) == 120
    after = 1.0 + net.predict(buf.observations[:120, 0], actions)
    np.testing.assert_allclose(buf.rewards[:120, 0], after, rtol=1e-5)
    assert np.all(buf.rewards[120:] == 0)


@pytest.mark.parametrize("demo_form", ["linear", "logistic"])
def test_reward_step_raises_demo_margin_and_preference_accuracy(tiny_data, demo_form):
    """The reward step moves the way the gradient in METHOD.md says: R(demo) - R(agent) goes up and
    the learned order of the preference pairs agrees more with their labels."""
    torch.manual_seed(0)
    cfg = AIHFControlConfig(reward_lr=3e-3, reward_batch_size=128, pref_batch_size=32, demo_form=demo_form)
    agent = trajectory_transitions(tiny_data["prefs"].trajectories, cfg, "agent")  # the worse episodes
    prefs = PreferenceTensors.build(tiny_data["prefs"], cfg)
    learner = RewardLearner(cfg, 3, 1, np.random.default_rng(0), tiny_data["demos"], prefs)
    demos, net = learner.demos, learner.net

    def margin() -> float:
        with torch.no_grad():
            return float(demos.rewards(net).mean() - agent.rewards(net).mean())

    margin0, acc0 = margin(), prefs.accuracy(net)
    stats = learner.step(150, agent)
    assert margin() > margin0 + 0.5
    assert prefs.accuracy(net) > max(acc0, 0.75)
    assert stats["preference"] < np.log(2)


@pytest.mark.parametrize("termination", ["env", "bootstrap"])
def test_falls_become_timeouts_only_with_bootstrap(termination):
    """Hopper ends an episode when it falls; with 'bootstrap' SAC must see that ending as a time-out."""
    net = RewardNet(11, 3, hidden=(8,), use_done=True)
    venv = LearnedRewardVecEnv(make_env("Hopper-v5", seed=0), net, termination=termination)
    venv.reset()
    for _ in range(1000):
        _, _, dones, infos = venv.step(np.ones((1, 3), dtype=np.float32))
        if dones[0]:
            break
    assert dones[0] and "terminal_observation" in infos[0]
    assert infos[0].get("TimeLimit.truncated", False) == (termination == "bootstrap")


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_predict_on_a_few_rows_is_the_forward_pass(rows):
    """The learned-reward env's per-step path (numpy, a few rows) computes what the module computes."""
    torch.manual_seed(0)
    net = RewardNet(4, 2, hidden=(16, 8), use_next_obs=True, use_done=True)
    obs, act, nxt = np.random.default_rng(0).normal(size=(3, rows, 4)).astype(np.float32)[[0, 1, 2]]
    act = act[:, :2]
    done = (np.arange(rows) % 2).astype(np.float32)
    expected = net(*(torch.as_tensor(x) for x in (obs, act, nxt, done))).detach().numpy()
    np.testing.assert_allclose(net.predict(obs, act, nxt, done), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the numpy path reads the current weights, not a stale copy
        net.mlp[0].bias.add_(1.0)
    moved = net(*(torch.as_tensor(x) for x in (obs, act, nxt, done))).detach().numpy()
    np.testing.assert_allclose(net.predict(obs, act, nxt, done), moved, rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved, expected)
