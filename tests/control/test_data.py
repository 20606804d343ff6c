import dataclasses
import json

import numpy as np
import pytest

from aihf.control.data import (
    Preferences,
    load_minari,
    load_preferences,
    load_trajectories,
    save_preferences,
    save_trajectories,
    shipped_data_dir,
)
from aihf.errors import InputError


def _arrays(path):
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(src, dst, **changes):
    arrays = _arrays(src)
    arrays.update(changes)
    np.savez(dst, **arrays)
    return dst


def test_round_trip(tiny_data, tmp_path):
    demos = load_trajectories(tiny_data["demos_path"], obs_dim=3, act_dim=1)
    assert demos.num_transitions == tiny_data["demos"].num_transitions
    np.testing.assert_allclose(demos.returns(), tiny_data["demos"].returns(), rtol=1e-5)
    prefs = load_preferences(tiny_data["prefs_path"], obs_dim=3, act_dim=1)
    np.testing.assert_array_equal(prefs.segments, tiny_data["prefs"].segments)
    save_preferences(tmp_path / "p.npz", prefs)
    assert len(load_preferences(tmp_path / "p.npz")) == len(prefs)


def test_next_states_are_stored_once_per_trajectory_when_they_chain(tiny_data, tmp_path):
    prefs = tiny_data["prefs"]
    assert "final_observations" in _arrays(tiny_data["prefs_path"])
    assert "next_observations" not in _arrays(tiny_data["prefs_path"])
    loaded = load_preferences(tiny_data["prefs_path"])
    np.testing.assert_array_equal(loaded.trajectories.next_observations, prefs.trajectories.next_observations)
    # next states that do not chain (here: one perturbed row) are stored whole and read back exactly
    broken = dataclasses.replace(
        prefs.trajectories, next_observations=prefs.trajectories.next_observations.copy()
    )
    broken.next_observations[3, 0] += 1.0
    save_preferences(tmp_path / "p.npz", Preferences(broken, prefs.segments, prefs.labels))
    assert "next_observations" in _arrays(tmp_path / "p.npz")
    reread = load_preferences(tmp_path / "p.npz").trajectories.next_observations
    np.testing.assert_array_equal(reread, broken.next_observations)


def test_final_observations_of_the_wrong_shape_name_the_file(tiny_data, tmp_path):
    final = _arrays(tiny_data["demos_path"])["final_observations"]
    path = _rewrite(tiny_data["demos_path"], tmp_path / "d.npz", final_observations=final[:-1])
    with pytest.raises(InputError, match=r"d\.npz: 'final_observations' has shape .* \(one per trajectory\)"):
        load_trajectories(path)


def test_environment_size_mismatch_names_file(tiny_data):
    with pytest.raises(InputError, match=r"demos\.npz: observations have size 3, .* observation size is 11"):
        load_trajectories(tiny_data["demos_path"], obs_dim=11, act_dim=3)
    with pytest.raises(InputError, match=r"actions have size 1, .* action size is 3"):
        load_trajectories(tiny_data["demos_path"], obs_dim=3, act_dim=3)


def test_nan_names_trajectory_and_step(tiny_data, tmp_path):
    obs = _arrays(tiny_data["demos_path"])["observations"].copy()
    lengths = _arrays(tiny_data["demos_path"])["lengths"]
    obs[lengths[0] + 5, 1] = np.nan  # trajectory 1, step 5
    path = _rewrite(tiny_data["demos_path"], tmp_path / "bad.npz", observations=obs)
    with pytest.raises(InputError, match=r"bad\.npz: trajectory 1, step 5: 'observations' contains NaN"):
        load_trajectories(path)


def test_wrong_dtype_and_shape(tiny_data, tmp_path):
    arrays = _arrays(tiny_data["demos_path"])
    path = _rewrite(tiny_data["demos_path"], tmp_path / "d.npz", actions=arrays["actions"].astype(np.int64))
    with pytest.raises(InputError, match="'actions' has dtype int64, expected a float dtype"):
        load_trajectories(path)
    path = _rewrite(tiny_data["demos_path"], tmp_path / "s.npz", rewards=arrays["rewards"][:-1])
    with pytest.raises(InputError, match=r"'rewards' has .* rows"):
        load_trajectories(path)
    path = _rewrite(tiny_data["demos_path"], tmp_path / "l.npz", lengths=arrays["lengths"] + 1)
    with pytest.raises(InputError, match="'lengths' sum to"):
        load_trajectories(path)
    with pytest.raises(InputError, match="file not found"):
        load_trajectories(tmp_path / "missing.npz")


def test_segment_out_of_range_and_bad_label(tiny_data, tmp_path):
    arrays = _arrays(tiny_data["prefs_path"])
    segments = arrays["segments"].copy()
    segments[7, 2] = arrays["lengths"][segments[7, 0]] + 1
    path = _rewrite(tiny_data["prefs_path"], tmp_path / "p.npz", segments=segments)
    with pytest.raises(InputError, match=r"p\.npz: preference 7: segment a .* out of range"):
        load_preferences(path)
    labels = arrays["labels"].copy()
    labels[3] = 1.5
    path = _rewrite(tiny_data["prefs_path"], tmp_path / "q.npz", labels=labels)
    with pytest.raises(InputError, match=r"preference 3: label 1.5, expected a value in \[0, 1\]"):
        load_preferences(path)


def test_split_is_disjoint(tiny_data):
    prefs: Preferences = tiny_data["prefs"]
    train, held = prefs.split(0.25, seed=0)
    assert len(train) + len(held) == len(prefs) and len(held) == 15
    as_set = lambda p: {tuple(r) for r in p.segments}  # noqa: E731
    assert len(as_set(train) | as_set(held)) == len(as_set(prefs))


def test_minari_import_is_guarded():
    try:
        import minari  # noqa: F401
    except ImportError:
        with pytest.raises(
            InputError, match=r"needs the optional package minari: pip install 'aihf\[minari\]'"
        ):
            load_minari("mujoco/hopper/expert-v0")
    else:
        pytest.skip("minari is installed")


def test_save_is_atomic_file(tiny_data, tmp_path):
    save_trajectories(tmp_path / "x.npz", tiny_data["demos"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_minari_demos_on_the_cli_need_minari(tmp_path, monkeypatch, capsys):
    try:
        import minari  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("minari is installed")
    from aihf.cli import main

    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))
    argv = [
        "control",
        "train",
        "--algo",
        "demo-only",
        "--demos",
        "minari:mujoco/pendulum-v0",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "pip install 'aihf[minari]'" in capsys.readouterr().err


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
def test_shipped_data_is_valid_and_matches_its_quality_table(env_id):
    from aihf.control.envs import env_dims

    shipped = shipped_data_dir(env_id)
    assert shipped is not None
    obs_dim, act_dim = env_dims(env_id)
    demos = load_trajectories(shipped / "demos.npz", obs_dim, act_dim)
    prefs = load_preferences(shipped / "prefs.npz", obs_dim, act_dim)
    quality = json.loads((shipped / "quality.json").read_text())["quality"]
    high = quality["high trajectories (demonstrations)"]
    assert len(demos) == high["count"] and len(prefs) == quality["preferred segments"]["count"]
    assert demos.returns().mean() == pytest.approx(high["mean"], rel=1e-5)
    # every demonstration beats every trajectory the preferences were drawn from
    assert demos.returns().min() >= prefs.trajectories.returns().max()
