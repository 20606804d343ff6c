"""The control trainer's callbacks: user hooks around the loop, and wall time summed over resumes."""

import json

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from aihf.control.callbacks import TrainerCallback
from aihf.control.config import AIHFControlConfig
from aihf.control.train import Trainer, train

TINY = {
    "n_timesteps": 300,
    "steps_per_iter": 100,
    "learning_starts": 100,
    "eval_episodes": 1,
    "batch_size": 32,
    "policy_kwargs": {"net_arch": [32, 32]},
    "reward_updates_per_iter": 2,
    "eval_interval": 200,
    "tensorboard": False,
}


class _Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.calls.append(("start", trainer.model.num_timesteps, len(trainer.state["curve"])))

    def on_iteration_end(self, trainer: Trainer, steps: int) -> None:
        # the built-in evaluation and checkpoint ran before: the curve and the checkpoint are current
        saved = json.loads((trainer.checkpoint_path / "state.json").read_text())["iteration"]
        assert saved == trainer.state["iteration"]
        self.calls.append(("iteration", trainer.model.num_timesteps, len(trainer.state["curve"])))

    def on_train_end(self, trainer: Trainer) -> None:
        self.calls.append(("end", trainer.model.num_timesteps, len(trainer.state["curve"])))


def test_user_callbacks_see_each_iteration_after_evaluation_and_checkpoint(tiny_data, tmp_path):
    recorder = _Recorder()
    cfg = AIHFControlConfig(algo="aihf", **TINY)
    train(cfg, tmp_path / "run", tiny_data["demos"], tiny_data["prefs"], progress=False, callbacks=[recorder])
    # evaluations at step 0 (before the loop), 200 (eval_interval) and 300 (the end)
    assert recorder.calls == [
        ("start", 0, 1),
        ("iteration", 100, 1),
        ("iteration", 200, 2),
        ("iteration", 300, 3),
        ("end", 300, 3),
    ]


class _Clock:
    """perf_counter for the trainer: one second per environment step, nothing else takes time."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Tick(BaseCallback):
    def __init__(self, clock: _Clock, stop_at: int | None = None) -> None:
        super().__init__()
        self.clock, self.stop_at = clock, stop_at

    def _on_step(self) -> bool:
        self.clock.now += 1
        if self.num_timesteps == self.stop_at:
            raise KeyboardInterrupt
        return True


def test_wall_time_of_a_resumed_run_counts_every_segment(tiny_data, tmp_path, monkeypatch):
    """Cut at step 250 after the checkpoint of step 200, then resumed: 200 s kept from the first segment
    plus 100 s of the second, as an uninterrupted run (the 50 s after the checkpoint are redone)."""
    clock = _Clock()
    monkeypatch.setattr("aihf.control.train.time", clock)
    cfg = AIHFControlConfig(algo="sac-true", **TINY)
    full = train(cfg, tmp_path / "full", progress=False, callback=_Tick(clock))
    assert full["wall_time_s"] == 300
    finished = []

    class _Ended(TrainerCallback):
        def on_train_end(self, trainer: Trainer) -> None:
            finished.append(trainer.state["iteration"])

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, callback=_Tick(clock, stop_at=250), callbacks=[_Ended()])
    assert finished == [2]  # on_train_end runs on Ctrl-C too
    resumed = train(None, tmp_path / "cut", resume=True, progress=False, callback=_Tick(clock))
    assert resumed["wall_time_s"] == 300
