"""benchmarks/control_reward_diagnosis.py and control_policy_gait.py: the two scripts the Hopper reading
quotes, on hand-made rewards, data and an untrained policy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aihf.control.data import Preferences, Trajectories, save_preferences, save_trajectories
from aihf.control.reward import RewardNet

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_diagnosis_reports_the_mean_reward_where_each_trajectory_starts(tmp_path, monkeypatch, capsys):
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)  # two trajectories, 4 + 2 steps
    act = np.zeros((6, 1), dtype=np.float32)

    def trajectories(lengths):
        n = sum(lengths)
        flags = np.zeros(n, dtype=bool)
        return Trajectories(obs[:n], act[:n], np.zeros(n, np.float32), flags, flags, np.array(lengths))

    save_trajectories(tmp_path / "demos.npz", trajectories([2]))
    segments = np.array([[0, 0, 2, 1, 0, 2]])
    save_preferences(
        tmp_path / "prefs.npz", Preferences(trajectories([4, 2]), segments, np.ones(1, np.float32))
    )
    net = RewardNet(2, 1, hidden=[])
    with torch.no_grad():  # reward = first observation coordinate - 5
        net.mlp[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        net.mlp[0].bias.fill_(-5.0)
    net.save_pretrained(tmp_path / "runs" / "aihf" / "seed0" / "reward_net")
    argv = ["x", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    load_script("control_reward_diagnosis").main()
    row = capsys.readouterr().out.splitlines()[-1]
    # demos: obs[:, 0] = 0, 2 -> -4; all: 0..10 step 2 -> mean 5 - 5 = 0; 3 of 6 below 0; starts 0, 8 -> -1
    assert row == "| aihf/seed0 | -4.000 | +0.000 | 0.50 | -1.000 |"


def test_gait_rollouts_measure_length_distance_and_speed():
    pytest.importorskip("mujoco")
    gait = load_script("control_policy_gait")
    standing = gait.rollouts(lambda obs: np.zeros((1, 3)), "Hopper-v5", episodes=2)
    assert standing["length"] > 0 and abs(standing["distance"]) < 0.5
    assert standing["velocity"] == pytest.approx(standing["distance"] / (standing["length"] * 0.008))


def test_gait_reads_each_runs_own_sac_backend(tmp_path):
    gait = load_script("control_policy_gait")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text('{"config": {"backend": "sbx"}}')
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text('{"config": {}}')  # from before the option: sb3
    assert [gait.saved_backend(tmp_path / d) for d in ("new", "old", "none")] == ["sbx", "sb3", "sb3"]
