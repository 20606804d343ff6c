"""Every algorithm's CLI path, shipped-data fallback, bad input, resume equality and divergence."""

import json

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from aihf.cli import main
from aihf.control.config import AIHFControlConfig
from aihf.control.data import load_trajectories, shipped_data_dir
from aihf.control.reward import RewardNet
from aihf.control.train import train

TINY = {
    "batch_size": 32,
    "policy_kwargs": {"net_arch": [32, 32]},
    "bc_steps": 20,
    "rlhf_reward_steps": 10,
    "reward_updates_per_iter": 3,
    "reward_lr": 1e-3,
    "tensorboard": False,
}
STEPS = [
    "--total-steps",
    "200",
    "--steps-per-iter",
    "100",
    "--learning-starts",
    "100",
    "--eval-episodes",
    "1",
]


@pytest.fixture(autouse=True)
def _only_control_cli(monkeypatch):
    """The other domains live on other branches; the dispatcher and its error handling are the real ones."""
    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in TINY.items()) + "\n")
    return path


@pytest.mark.parametrize("algo", ["aihf", "rlhf", "bc", "pref-only", "demo-only", "sac-true", "ipl"])
def test_every_algorithm_cli(algo, tiny_data, tiny_yaml, tmp_path, capsys):
    out = tmp_path / algo
    argv = ["control", "train", "--env", "Pendulum-v1", "--algo", algo, "--seed", "0", "--out", str(out)]
    argv += ["--demos", str(tiny_data["demos_path"]), "--prefs", str(tiny_data["prefs_path"])]
    argv += ["--config", str(tiny_yaml), "--no-progress", *STEPS]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["algo"] == algo and results["env"] == "Pendulum-v1" and results["total_steps"] == 200
    assert np.isfinite(results["eval_return_mean"]) and results["eval_return_std"] >= 0
    assert results["config"]["batch_size"] == 32  # from the YAML file
    lines = (out / "curve.csv").read_text().splitlines()
    assert lines[0] == "step,eval_return_mean,eval_return_std"
    assert len(lines) == (2 if algo == "bc" else 4)  # step 0 (+ one row per 100-step iteration)
    assert results["env_steps"] == (0 if algo == "bc" else 200)
    if algo in ("aihf", "rlhf", "pref-only", "demo-only"):
        assert (out / "reward_net" / "reward.pt").is_file()
        assert 0 <= results["reward_diagnostics"]["heldout_preference_accuracy"] <= 1


def test_shipped_data_is_used_when_not_given(tiny_yaml, tmp_path):
    shipped = shipped_data_dir("Pendulum-v1")
    assert shipped is not None
    out = tmp_path / "run"
    argv = [
        "control",
        "train",
        "--algo",
        "aihf",
        "--out",
        str(out),
        "--config",
        str(tiny_yaml),
        "--no-progress",
    ]
    assert main([*argv, *STEPS]) == 0
    used = load_trajectories(out / "data" / "demos.npz")
    assert used.num_transitions == load_trajectories(shipped / "demos.npz").num_transitions


def test_bad_input_is_one_line_exit_2(tiny_data, tmp_path, capsys):
    base = ["control", "train", "--algo", "aihf", "--out", str(tmp_path / "x"), *STEPS]
    assert main([*base, "--env", "MountainCarContinuous-v0"]) == 2
    assert "needs demonstrations: pass --demos" in capsys.readouterr().err
    argv = [*base, "--env", "MountainCarContinuous-v0", "--demos", str(tiny_data["demos_path"])]
    assert main([*argv, "--prefs", str(tiny_data["prefs_path"])]) == 2
    err = capsys.readouterr().err
    assert "demos.npz: observations have size 3, the environment's observation size is 2" in err
    assert main([*base, "--env", "NoSuchEnv-v9"]) == 2
    assert "not a registered gymnasium environment" in capsys.readouterr().err


class _Interrupt(BaseCallback):
    """Ctrl-C in the middle of the third iteration."""

    def _on_step(self) -> bool:
        if self.num_timesteps == 250:
            raise KeyboardInterrupt
        return True


def _cfg(**kw) -> AIHFControlConfig:
    values = {**TINY, "n_timesteps": 300, "steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1}
    return AIHFControlConfig(**{**values, **kw})


def _full_and_interrupted_runs(cfg: AIHFControlConfig, data: dict, root) -> dict:
    """One uninterrupted run (root/full) and one stopped by Ctrl-C mid-iteration (root/cut)."""
    full = train(cfg, root / "full", data["demos"], data["prefs"], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, root / "cut", data["demos"], data["prefs"], callback=_Interrupt(), progress=False)
    return full


def _assert_same_rewards_and_curves(root) -> None:
    ra = RewardNet.from_pretrained(root / "full" / "reward_net").state_dict()
    rb = RewardNet.from_pretrained(root / "cut" / "reward_net").state_dict()
    for key in ra:
        torch.testing.assert_close(ra[key], rb[key], rtol=0, atol=0)
    assert (root / "full" / "curve.csv").read_text() == (root / "cut" / "curve.csv").read_text()


def test_a_run_leaves_no_logger_directory_in_the_temporary_directory(tiny_data, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where SB3 makes SB3-<time> dirs
    (tmp_path / "tmp").mkdir()
    cfg = _cfg(algo="sac-true", n_timesteps=200, tensorboard=False)  # TensorBoard's logger: see bench tests
    train(cfg, tmp_path / "run", progress=False)
    assert list((tmp_path / "tmp").glob("SB3-*")) == []  # it made one per learn(), an iteration each


def test_interrupt_then_resume_equals_uninterrupted_run(tiny_data, tmp_path):
    # 75-step iterations: checkpoints fall mid-episode (Pendulum episodes are 200 steps), so the
    # environment's own state must be restored too
    full = _full_and_interrupted_runs(_cfg(algo="aihf", seed=3, steps_per_iter=75), tiny_data, tmp_path)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 3  # the checkpoint of the last finished iteration (step 225) is intact
    assert main(["control", "train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed["eval_return_mean"] == full["eval_return_mean"]
    a, b = SAC.load(tmp_path / "full" / "policy.zip"), SAC.load(tmp_path / "cut" / "policy.zip")
    for (name, p), q in zip(a.policy.state_dict().items(), b.policy.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    _assert_same_rewards_and_curves(tmp_path)


def test_a_resume_that_extends_n_timesteps_ends_as_the_longer_run(tiny_data, tmp_path, capsys):
    """A finished 200-step run resumed with --n_timesteps 400 equals a 400-step run: the replay buffer
    grows, the budget is the run's from then on; a smaller budget is refused."""
    full = train(
        _cfg(algo="aihf", seed=4, n_timesteps=400), tmp_path / "full", tiny_data["demos"], tiny_data["prefs"]
    )
    train(
        _cfg(algo="aihf", seed=4, n_timesteps=200), tmp_path / "cut", tiny_data["demos"], tiny_data["prefs"]
    )
    cut = str(tmp_path / "cut")
    assert main(["control", "train", "--resume", cut, "--n_timesteps", "100", "--no-progress"]) == 2
    assert "n_timesteps 100 is below the run's 200; a resume can only extend it" in capsys.readouterr().err
    assert main(["control", "train", "--resume", cut, "--n_timesteps", "400", "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed["total_steps"] == resumed["env_steps"] == 400 and resumed["config"]["n_timesteps"] == 400
    assert resumed["eval_return_mean"] == full["eval_return_mean"]
    a, b = SAC.load(tmp_path / "full" / "policy.zip"), SAC.load(tmp_path / "cut" / "policy.zip")
    for (name, p), q in zip(a.policy.state_dict().items(), b.policy.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    _assert_same_rewards_and_curves(tmp_path)


def test_diverging_reward_stops_with_clear_message(tiny_data, tmp_path, capsys):
    out = tmp_path / "div"
    argv = [
        "control",
        "train",
        "--env",
        "Pendulum-v1",
        "--algo",
        "demo-only",
        "--out",
        str(out),
        "--no-progress",
    ]
    argv += ["--demos", str(tiny_data["demos_path"]), "--reward-lr", "1e30", "--centering-coef", "0"]
    assert main([*argv, *STEPS]) == 1
    assert "the learned reward diverged" in capsys.readouterr().err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 0  # the last good checkpoint (before the bad reward step) is kept
    assert not (out / "results.json").exists()


def test_resume_is_exact_on_the_sbx_backend(tiny_data, tmp_path):
    """As above (sb3), with JAX SAC: its PRNG keys are part of the checkpoint. (About 20 s: each new
    or loaded sbx model is JIT-compiled.)"""
    cfg = _cfg(algo="aihf", seed=2, steps_per_iter=75, backend="sbx")
    full = _full_and_interrupted_runs(cfg, tiny_data, tmp_path)
    resumed = train(None, tmp_path / "cut", resume=True, progress=False)
    assert resumed["backend"] == "sbx" and resumed["ent_coef"] == "fixed 0.2"
    assert resumed["eval_return_mean"] == full["eval_return_mean"]
    _assert_same_rewards_and_curves(tmp_path)


def test_ipl_needs_next_states_in_the_preference_file(tiny_data, tmp_path, capsys):
    with np.load(tiny_data["prefs_path"]) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("next_observations", "final_observations")}
    np.savez(tmp_path / "prefs.npz", **arrays)
    argv = [
        "control",
        "train",
        "--algo",
        "ipl",
        "--prefs",
        str(tmp_path / "prefs.npz"),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    assert "algo ipl needs 'next_observations' in the preference file" in capsys.readouterr().err
