import json

import numpy as np
import pytest

from aihf.cli import main
from aihf.control.collect import CollectConfig, make_preferences
from aihf.control.data import load_preferences, load_trajectories
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
