"""demo_term: 'trajectory', the paper's per-trajectory discounted sums (v1 eq. 32-34), beside the mean."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.buffers import ReplayBuffer

from aihf.cli import main
from aihf.control.config import AIHFControlConfig
from aihf.control.data import save_trajectories
from aihf.control.reward_learning import RewardLearner, Transitions, buffer_episodes

SPACE = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)


def _buffer(dones: list[int], size: int, timeouts: list[int] = ()) -> ReplayBuffer:
    """A one-env buffer whose observation at each row is that row's chronological step number."""
    buf = ReplayBuffer(size, SPACE, SPACE, device="cpu")
    for step, done in enumerate(dones):
        obs = np.array([[step]], dtype=np.float32)
        infos = [{"TimeLimit.truncated": step in timeouts}]
        buf.add(obs, obs + 1, np.zeros((1, 1), np.float32), np.zeros(1), np.array([done]), infos)
    return buf


def test_agent_episodes_are_taken_whole_and_the_running_one_is_left_out():
    # episodes of 3, 4 and 2 steps end at steps 2, 6, 8; steps 9-10 are an episode still running
    dones = [0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0]
    got = buffer_episodes(_buffer(dones, 20), 4, len(dones))  # steps 7-10: only the third episode ends there
    assert list(got.lengths) == [2] and got.obs[:, 0].tolist() == [7, 8]
    got = buffer_episodes(_buffer(dones, 20), 6, len(dones))  # steps 5-10: the second is taken whole, from 3
    assert list(got.lengths) == [4, 2] and got.obs[:, 0].tolist() == [3, 4, 5, 6, 7, 8]
    got = buffer_episodes(_buffer(dones[:8], 20), 1, 8)  # none ends in the window: the latest one
    assert list(got.lengths) == [4]
    assert len(buffer_episodes(_buffer([0, 0, 0], 20), 3, 3).lengths) == 0


def test_an_episode_whose_start_was_overwritten_is_left_out_and_timeouts_are_not_terminal():
    # 12 steps into a 10-row ring: steps 0-1 are gone, so the episode of steps 0-4 is cut
    dones = [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    got = buffer_episodes(_buffer(dones, 10, timeouts=[11]), 10, len(dones))
    assert list(got.lengths) == [3, 4] and got.obs[:, 0].tolist() == [5, 6, 7, 8, 9, 10, 11]
    exactly_full = buffer_episodes(_buffer(dones[:10], 10), 10, 10)  # nothing overwritten yet
    assert list(exactly_full.lengths) == [5, 3]
    assert got.done.tolist() == [0, 0, 1, 0, 0, 0, 0]  # step 11 was a time limit, not a fall


def _constant_learner(demo_term: str, tiny_data) -> RewardLearner:
    """A learner whose reward is one constant c (the last layer's bias), updated by plain SGD."""
    cfg = AIHFControlConfig(demo_term=demo_term, centering_coef=0.0, grad_clip=0.0, gamma=0.9, alpha=0.5)
    learner = RewardLearner(cfg, 3, 1, np.random.default_rng(0), tiny_data["demos"])
    with torch.no_grad():
        learner.net.mlp[-1].weight.zero_()
    learner.optimizer = torch.optim.SGD(learner.net.parameters(), lr=1.0)
    return learner


@pytest.mark.parametrize("demo_term", ["mean", "trajectory"])
def test_a_constant_reward_offset_gets_the_survival_gradient_only_from_whole_trajectories(
    demo_term, tiny_data
):
    """Demonstrations last 60 steps, the agent's two episodes 20 and 40 (it fell early): the offset c
    rises by alpha * (E_D[sum_{t<T} gamma^t] - E_pi[sum_{t<T} gamma^t]) in the trajectory form and stays
    put in the mean form."""
    learner = _constant_learner(demo_term, tiny_data)
    demos = learner.demos
    agent = Transitions(
        demos.obs[:60], demos.act[:60], demos.next_obs[:60], demos.done[:60], np.array([20, 40])
    )
    bias = learner.net.mlp[-1].bias
    before = bias.item()
    learner.step(1, agent, use_prefs=False)
    assert set(tiny_data["demos"].lengths) == {60}

    def discounted(n: int) -> float:
        return (1 - 0.9**n) / (1 - 0.9)

    expected = (
        0.5 * (discounted(60) - (discounted(20) + discounted(40)) / 2) if demo_term == "trajectory" else 0
    )
    assert bias.item() - before == pytest.approx(expected, rel=1e-4, abs=1e-6)


ARGS = ["control", "train", "--env", "Pendulum-v1", "--algo", "demo-only", "--no-progress"]
STEPS = [
    "--total-steps",
    "300",
    "--steps-per-iter",
    "100",
    "--learning-starts",
    "100",
    "--eval-episodes",
    "1",
]


def test_trajectory_form_trains_end_to_end(tiny_data, tmp_path):
    """Pendulum's episodes last 200 steps: the first iteration has no finished episode (no demonstration
    term), the next ones use the episode that ended at step 200."""
    out = tmp_path / "run"
    argv = [*ARGS, "--demo-term", "trajectory", "--demos", str(tiny_data["demos_path"]), "--out", str(out)]
    assert main([*argv, *STEPS, "--reward-updates", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["demo_term"] == "trajectory" and np.isfinite(results["eval_return_mean"])
    stats = json.loads((out / "checkpoint" / "state.json").read_text())["reward_stats"]
    assert [row["iteration"] for row in stats] == [1, 2] and all(row["demo"] != 0 for row in stats)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--demo-term", "sum"], "--demo_term = 'sum'"),
        (["--demo-term", "trajectory", "--demo-form", "logistic"], "needs demo_form 'linear'"),
        (
            ["--demo-term", "trajectory", "--demos", "{cut}"],
            "cut.npz: trajectory 1 ends without a terminated",
        ),
    ],
)
def test_bad_demo_term_settings_are_one_line_before_training(extra, message, tiny_data, tmp_path, capsys):
    demos = tiny_data["demos"]
    cut = demos.select(np.arange(len(demos)))
    cut.truncated[demos.starts[1] + demos.lengths[1] - 1] = False  # trajectory 1: a piece of an episode
    save_trajectories(tmp_path / "cut.npz", cut)
    extra = [arg.format(cut=tmp_path / "cut.npz") for arg in extra]
    if "--demos" not in extra:
        extra += ["--demos", str(tiny_data["demos_path"])]
    out = tmp_path / "run"
    assert main([*ARGS, "--out", str(out), *STEPS, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
