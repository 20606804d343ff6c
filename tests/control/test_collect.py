import json

import numpy as np
import pytest

from aihf.cli import main
from aihf.control.collect import CollectConfig, make_preferences, pair_window
from aihf.control.data import Trajectories, load_preferences, load_trajectories, save_trajectories
from aihf.errors import InputError


def _segment_returns(prefs):
    starts, rew = prefs.trajectories.starts, prefs.trajectories.rewards
    ret = lambda t, s, e: rew[starts[t] + s : starts[t] + e].sum()  # noqa: E731
    return (np.array([ret(*r[:3]) for r in prefs.segments]), np.array([ret(*r[3:]) for r in prefs.segments]))


def test_collect_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))
    out = tmp_path / "data"
    argv = ["control", "collect", "--env", "Pendulum-v1", "--out", str(out), "--expert-steps", "300"]
    argv += ["--checkpoint-every", "100", "--episodes-per-checkpoint", "2", "--num-preferences", "40"]
    assert main([*argv, "--segment-length", "20"]) == 0
    assert "preferred segments" in capsys.readouterr().out
    demos = load_trajectories(out / "demos.npz", obs_dim=3, act_dim=1)
    prefs = load_preferences(out / "prefs.npz", obs_dim=3, act_dim=1)
    assert len(demos) == 2 and len(prefs.trajectories) == 4  # 3 checkpoints x 2 episodes, terciles
    assert demos.returns().min() >= prefs.trajectories.returns().max()  # demonstrations = the high bucket
    ret_a, ret_b = _segment_returns(prefs)
    assert np.all((prefs.segments[:, 2] - prefs.segments[:, 1]) == 20)
    np.testing.assert_array_equal(prefs.labels, (ret_a > ret_b).astype(np.float32))
    quality = json.loads((out / "quality.json").read_text())["quality"]
    assert quality["preferred segments"]["mean"] > quality["non-preferred segments"]["mean"]
    assert demos.next_observations is not None


def test_bradley_terry_labels_are_noisy_with_temperature(tiny_data):
    pool = tiny_data["prefs"].trajectories
    cold = make_preferences(
        pool,
        CollectConfig(num_preferences=300, segment_length=10, label_mode="bradley-terry", temperature=1e-6),
        np.random.default_rng(0),
    )
    ret_a, ret_b = _segment_returns(cold)
    np.testing.assert_array_equal(cold.labels, (ret_a > ret_b).astype(np.float32))
    hot = make_preferences(
        pool,
        CollectConfig(num_preferences=300, segment_length=10, label_mode="bradley-terry", temperature=1e3),
        np.random.default_rng(0),
    )
    ret_a, ret_b = _segment_returns(hot)
    agreement = np.mean(hot.labels == (ret_a > ret_b))
    assert 0.3 < agreement < 0.75  # close to coin flips at a high temperature
    assert set(np.unique(hot.labels)) <= {0.0, 1.0}


def test_bad_collect_options():
    with pytest.raises(InputError, match="label_mode"):
        CollectConfig(label_mode="soft")
    with pytest.raises(InputError, match="temperature"):
        CollectConfig(label_mode="bradley-terry", temperature=0)


def test_expert_run_continues_from_its_newest_checkpoint(tmp_path, capsys):
    from aihf.control.collect import collect

    cfg = CollectConfig(expert_steps=300, checkpoint_every=100, episodes_per_checkpoint=1, num_preferences=10)
    cfg.learning_starts = 50
    collect(cfg, tmp_path, progress=False)
    ckpts = tmp_path / "expert_checkpoints"
    assert sorted(p.name for p in ckpts.glob("replay_*")) == ["replay_300.npz"]  # only the newest buffer
    longer = CollectConfig(**{**cfg.__dict__, "expert_steps": 500, "rollout_from": 300, "max_demos": 0})
    table = collect(longer, tmp_path, progress=False)
    assert "continuing the expert from its checkpoint at step 300" in capsys.readouterr().out
    steps = sorted(int(p.stem.split("_")[1]) for p in ckpts.glob("sac_*_steps.zip"))
    assert steps == [100, 200, 300, 400, 500]
    buckets = ("low trajectories", "medium trajectories", "high trajectories (demonstrations)")
    assert sum(table[name]["count"] for name in buckets) == 3  # one episode each from steps 300, 400, 500
    assert table["preferred (whole trajectories)"]["count"] == 10
    few = CollectConfig(**{**longer.__dict__, "episodes_per_checkpoint": 3, "max_demos": 2})
    table = collect(few, tmp_path, progress=False)  # the expert is done: only the rollouts run again
    assert table["high trajectories (demonstrations)"]["count"] == 2  # of the top third of 9 rollouts
    assert len(load_trajectories(tmp_path / "demos.npz")) == 2
    with pytest.raises(InputError, match="checkpoint_every"):
        CollectConfig(expert_steps=100, checkpoint_every=200)


def _pool(lengths, per_step, fall_below, env_id="Toy-v0"):
    """Trajectories of constant per-step reward; those shorter than `fall_below` end terminated (a fall)."""
    episodes = []
    for length, r in zip(lengths, per_step):
        end = np.zeros(length, dtype=bool)
        end[-1] = True
        falls = length < fall_below
        episodes.append(
            {
                "observations": np.full((length, 2), length, dtype=np.float32),
                "actions": np.zeros((length, 1), dtype=np.float32),
                "rewards": np.full(length, r, dtype=np.float32),
                "terminated": end & falls,
                "truncated": end & ~falls,
            }
        )
    return Trajectories.from_episodes(episodes, env_id)


def _brute_force_window(returns, demo_return, targets, min_pool):
    v = np.sort(returns)
    best = None
    for i in range(len(v)):
        for j in range(i + min_pool, len(v) + 1):
            a, b = np.triu_indices(j - i, k=1)
            low, high = v[i:j][a].mean(), v[i:j][b].mean()
            miss = (low / demo_return - targets[0]) ** 2 + (high / demo_return - targets[1]) ** 2
            if best is None or miss < best[0]:
                best = (miss, low, high)
    return best[1:]


def test_the_pair_window_is_the_window_whose_side_means_come_closest_to_the_targets():
    returns = np.random.default_rng(3).gamma(2.0, 50.0, size=40)
    window, low, high = pair_window(returns, 200.0, (0.66, 0.85), 6)
    assert (low, high) == pytest.approx(_brute_force_window(returns, 200.0, (0.66, 0.85), 6))
    inside = np.sort(returns[window])
    assert (
        len(window) >= 6
        and not ((returns > inside[0]) & (returns < inside[-1]) & ~np.isin(np.arange(40), window)).any()
    )  # contiguous in return order


def test_whole_trajectory_pairs_hold_falls_at_the_papers_gaps(tmp_path, monkeypatch, capsys):
    # 30 trajectories of 10-100 steps of reward 1, those under 100 steps fall; demonstrations return 110
    lengths = list(range(10, 101, 10)) * 3
    pool = _pool(lengths, [1.0] * 30, fall_below=100)
    save_trajectories(tmp_path / "pool.npz", pool)
    save_trajectories(tmp_path / "demos.npz", _pool([100, 100], [1.1, 1.1], fall_below=0))
    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))
    out = tmp_path / "out"
    argv = ["control", "pairs", "--pool", str(tmp_path / "pool.npz"), "--demos", str(tmp_path / "demos.npz")]
    assert main([*argv, "--out", str(out), "--min-pool", "8"]) == 0
    assert "non-preferred" in capsys.readouterr().out
    prefs = load_preferences(out / "prefs.npz")
    traj = prefs.trajectories
    returns = traj.returns()
    a, b = prefs.segments[:, 0], prefs.segments[:, 3]
    # whole trajectories, every distinct pair once, labelled by true return (ties 0.5)
    assert (prefs.segments[:, [1, 4]] == 0).all()
    np.testing.assert_array_equal(prefs.segments[:, 2], traj.lengths[a])
    assert len({tuple(sorted(p)) for p in zip(a, b)}) == len(prefs) == len(traj) * (len(traj) - 1) // 2
    expected = np.where(returns[a] > returns[b], 1.0, np.where(returns[a] < returns[b], 0.0, 0.5))
    np.testing.assert_array_equal(prefs.labels, expected)
    table = json.loads((out / "table1.json").read_text())["table1"]
    sets = table["sets"]
    low, high = _brute_force_window(pool.returns(), 110.0, (0.66, 0.85), 8)
    assert sets["non-preferred"]["mean"] == pytest.approx(low)
    assert sets["preferred"]["mean"] == pytest.approx(high)
    assert abs(sets["non-preferred"]["of_demonstrations"] - 0.66) < 0.05
    assert abs(sets["preferred"]["of_demonstrations"] - 0.85) < 0.05
    assert sets["demonstrations"]["fall_rate"] == 0.0 and sets["non-preferred"]["fall_rate"] > 0.5
    assert table["pairs_with_one_fall"] > 0  # a fall is inside the compared data
    assert load_trajectories(out / "demos.npz").returns() == pytest.approx([110.0, 110.0])
    assert (out / "table1.md").read_text().startswith("| Toy-v0 set")


def test_pairs_refuses_bad_input_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))
    save_trajectories(tmp_path / "pool.npz", _pool([10, 20, 30], [1.0] * 3, fall_below=30))
    save_trajectories(tmp_path / "other.npz", _pool([10, 20, 30], [1.0] * 3, fall_below=30, env_id="X"))
    save_trajectories(tmp_path / "demos.npz", _pool([30], [1.2], fall_below=0))
    save_trajectories(tmp_path / "human.npz", _pool([10, 20, 30], [float("nan")] * 3, fall_below=30))
    argv = ["control", "pairs", "--demos", str(tmp_path / "demos.npz"), "--out", str(tmp_path / "o")]
    cases = [
        (["--pool", str(tmp_path / "pool.npz"), "--min-pool", "5"], "the pool has only 3 trajectories"),
        (["--pool", str(tmp_path / "other.npz")], "env_id 'X'"),
        (["--pool", str(tmp_path / "pool.npz"), "--targets", "0.9", "0.5"], "--targets"),
        (["--pool", str(tmp_path / "missing.npz")], "file not found"),
        (["--pool", str(tmp_path / "human.npz")], "human.npz: rewards are unknown (NaN)"),
        (["--pool", str(tmp_path / "pool.npz"), "--out", str(tmp_path)], "would overwrite this input"),
    ]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
