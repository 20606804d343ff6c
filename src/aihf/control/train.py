"""The training loop every control algorithm shares (METHOD.md Algorithm 1 with SAC).

    setup         the algorithm's one-time work (BC warm start, RLHF's preference reward)
    for k in iterations:
        policy step   SAC.learn(steps_per_iter, reset_num_timesteps=False) on the reward the algorithm
                      chose (one SAC model and replay buffer for the whole run)
        after step    the algorithm's work: for AIHF the reward step on demonstrations and preferences
                      and the re-scoring of the replay buffer with the new reward (`algorithms.py`)
        callbacks     evaluation (deterministic true return), checkpoint (atomic), progress bar, the
                      user's (`callbacks.py`)

The methods themselves are classes in `algorithms.py` (their hooks get a `Run`); the learned reward is
a `reward_learning.RewardLearner`; the SAC implementation (stable-baselines3 or sbx) is a backend in
`backends.py`; checkpoint state is JSON and npz (`state.py`). A seeded CPU run that is interrupted
and resumed ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.logger import configure as configure_logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from aihf import checkpoints
from aihf.control.algorithms import Run, make_algorithm
from aihf.control.backends import Backend, get_backend, sac_kwargs
from aihf.control.callbacks import (
    CheckpointCallback,
    EvaluationCallback,
    ProgressBarCallback,
    TrainerCallback,
)
from aihf.control.config import AIHFControlConfig
from aihf.control.data import (
    Preferences,
    Trajectories,
    load_minari,
    load_preferences,
    load_trajectories,
    save_preferences,
    save_trajectories,
)
from aihf.control.envs import env_dims, env_restore, env_snapshot, make_env
from aihf.control.reward import LearnedRewardVecEnv, RewardNet
from aihf.control.reward_learning import (
    RewardDivergedError,
    RewardLearner,
    require_whole_episodes,
    split_preferences,
)
from aihf.control.state import load_replay, save_replay
from aihf.errors import InputError
from aihf.io import atomic_path, write_json, write_text
from aihf.safety import check_memory
from aihf.state import read_state, write_state

__all__ = ["RewardDivergedError", "Trainer", "evaluate", "load_run_data", "reevaluate", "train"]


# ---------------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    seed: int,
    episodes: int,
    reward_net: RewardNet | None = None,
) -> dict[str, Any]:
    """True return of the deterministic policy `act` (a batch of observations -> actions) over
    `episodes` seeded episodes; with a reward net, also the learned return of the same rollouts and
    its correlation with the true one (per episode and per step)."""
    env = gym.make(env_id)
    true_returns, learned_returns, true_steps, learned_steps = [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        rows, total, done = [], 0.0, False
        while not done:
            action = act(obs.reshape(1, -1))[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rows.append((obs, action, next_obs, float(terminated), float(reward)))
            total += float(reward)
            obs, done = next_obs, terminated or truncated
        true_returns.append(total)
        if reward_net is not None:
            o, a, n, d, r = (np.array(x, dtype=np.float32) for x in zip(*rows))
            learned = reward_net.predict(o, a.reshape(len(a), -1), n, d)
            learned_returns.append(float(learned.sum()))
            learned_steps.append(learned)
            true_steps.append(r)
    env.close()
    out: dict[str, Any] = {
        "return_mean": float(np.mean(true_returns)),
        "return_std": float(np.std(true_returns)),
        "returns": true_returns,
    }
    if reward_net is not None:
        out["learned_returns"] = learned_returns
        out["return_correlation"] = _corr(true_returns, learned_returns)
        out["step_reward_correlation"] = _corr(np.concatenate(true_steps), np.concatenate(learned_steps))
    return out


REEVALUATION_SEED_OFFSET = 20_000  # the training evaluations use seed + 10_000: other episodes here


def reevaluate(run_dir: str | Path, episodes: int) -> dict[str, Any]:
    """The saved final policy (`policy.zip`) of a finished run, evaluated again on `episodes` episodes
    other than those of the training evaluations (deterministic actions, true return); written to
    `reevaluation.json` in the run directory and returned."""
    run_dir = Path(run_dir)
    policy = run_dir / "policy.zip"
    if not policy.is_file():
        raise InputError(f"{run_dir}: no policy.zip to re-evaluate (a run finished before BC saved one?)")
    cfg = AIHFControlConfig.from_dict(json.loads((run_dir / "results.json").read_text())["config"])
    backend = get_backend(cfg.backend)
    sac_class = make_algorithm(cfg.algo).sac_class(backend)
    model = backend.load(policy, make_env(cfg.env_id, cfg.seed), cfg.device, sac_class)
    seed = cfg.seed + REEVALUATION_SEED_OFFSET
    found = evaluate(lambda obs: backend.act(model, obs), cfg.env_id, seed, episodes)
    out = {"episodes": episodes, "seed": seed, **found}
    write_json(run_dir / "reevaluation.json", out)
    return out


def _corr(x, y) -> float | None:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "eval_return_mean", "eval_return_std"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------
# checkpoints


_PICKLED = ("runtime.pkl", "replay.pkl", "reward.pt")  # pickled state that older checkpoints held


def _save_checkpoint(
    path: Path,
    model: OffPolicyAlgorithm,
    reward: RewardLearner | None,
    rng: np.random.Generator,
    state: dict[str, Any],
    backend: Backend,
) -> None:
    """SAC (sac.zip), the replay buffer, the reward learner, every RNG and the environment's exact
    state; the last three as JSON + npz (runtime.*)."""
    venv = model.get_env()
    base = _base_venv(venv)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        model.save(tmp / "sac.zip")  # without the replay buffer (stable-baselines3 leaves it out)
        save_replay(tmp / "replay.npz", model.replay_buffer)
        runtime = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "random": random.getstate(),
            "data_rng": rng.bit_generator.state,
            "action_space": model.action_space.np_random.bit_generator.state,
            "backend": backend.rng_state(model),
            "envs": [env_snapshot(env) for env in base.envs],
            "wrapper_last_obs": getattr(venv, "_last_obs", None),
            "reward": reward.state_dict() if reward is not None else None,
        }
        write_state(tmp, "runtime", runtime)
        write_json(tmp / "state.json", state)
        checkpoints.write_manifest(tmp)  # last: resume verifies every file against it


def _load_checkpoint(
    path: Path,
    venv: VecEnv,
    cfg: AIHFControlConfig,
    reward: RewardLearner | None,
    rng: np.random.Generator,
    backend: Backend,
    sac_class: type | None,
) -> tuple[OffPolicyAlgorithm, dict[str, Any]]:
    old = [name for name in _PICKLED if (path / name).exists()]
    if old:
        raise InputError(
            f"{path}: holds {', '.join(old)}, pickled state of an older aihf; not loaded, since unpickling "
            "can run code: start the run again"
        )
    runtime = read_state(path, "runtime")
    model = backend.load(path / "sac.zip", venv, cfg.device, sac_class, sac_kwargs(cfg)["buffer_size"])
    load_replay(path / "replay.npz", model.replay_buffer)
    if reward is not None:
        reward.load_state_dict(runtime["reward"])
    base = _base_venv(venv)
    for env, snap in zip(base.envs, runtime["envs"], strict=True):
        env_restore(env, snap)
    if isinstance(venv, LearnedRewardVecEnv):
        venv._last_obs = runtime["wrapper_last_obs"]
    torch.set_rng_state(runtime["torch"])
    np.random.set_state(runtime["numpy"])
    random.setstate(runtime["random"])
    rng.bit_generator.state = runtime["data_rng"]
    model.action_space.np_random.bit_generator.state = runtime["action_space"]
    backend.set_rng_state(model, runtime["backend"])
    return model, json.loads((path / "state.json").read_text())


def _base_venv(venv: VecEnv) -> VecEnv:
    return venv.venv if isinstance(venv, LearnedRewardVecEnv) else venv


# ---------------------------------------------------------------------------------------------------
# data


def _check_sizes(traj: Trajectories, source: str, obs_dim: int, act_dim: int) -> None:
    if traj.observations.shape[1] != obs_dim or traj.actions.shape[1] != act_dim:
        raise InputError(
            f"{source}: observation/action sizes {traj.observations.shape[1]}/{traj.actions.shape[1]}, "
            f"the environment's are {obs_dim}/{act_dim}"
        )


def load_run_data(
    cfg: AIHFControlConfig, demos_path: str | Path | None, prefs_path: str | Path | None
) -> tuple[Trajectories | None, Preferences | None]:
    """Load (and validate against the environment) the data this algorithm needs."""
    obs_dim, act_dim = env_dims(cfg.env_id)
    algorithm = make_algorithm(cfg.algo)
    demos = prefs = None
    if algorithm.needs_demos:
        if demos_path is None:
            raise InputError(
                f"algo {cfg.algo} needs demonstrations: pass --demos (no shipped data for {cfg.env_id})"
            )
        if str(demos_path).startswith("minari:"):
            demos = load_minari(str(demos_path).removeprefix("minari:"))
            _check_sizes(demos, str(demos_path), obs_dim, act_dim)
        else:
            demos = load_trajectories(demos_path, obs_dim, act_dim)
    if demos is not None and cfg.demo_term == "trajectory":
        require_whole_episodes(demos, str(demos_path))
    if algorithm.needs_prefs and prefs_path is None:
        raise InputError(
            f"algo {cfg.algo} needs preferences: pass --prefs (no shipped data for {cfg.env_id})"
        )
    if prefs_path is not None and algorithm.uses_prefs:
        # demo-only does not train on them, but its learned reward is still scored on the held-out pairs
        prefs = load_preferences(prefs_path, obs_dim, act_dim)
        if algorithm.needs_next_states and prefs.trajectories.next_observations is None:
            raise InputError(
                f"{prefs_path}: algo {cfg.algo} needs 'next_observations' in the preference file"
            )
    return demos, prefs


# ---------------------------------------------------------------------------------------------------
# the run


class Trainer:
    """One run: its algorithm, SAC model, learned reward, data, RNGs and the shared `learn()` loop."""

    def __init__(
        self,
        cfg: AIHFControlConfig,
        out_dir: str | Path,
        demos: Trajectories | None,
        prefs: Preferences | None,
    ) -> None:
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.algorithm = make_algorithm(cfg.algo)
        self.backend = get_backend(cfg.backend)
        self._segment_start = time.perf_counter()
        set_random_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.venv = make_env(cfg.env_id, cfg.seed)
        obs_dim, act_dim = env_dims(cfg.env_id)
        self.demos = demos
        self.prefs_train, held_out = split_preferences(prefs, cfg)
        self.reward: RewardLearner | None = None
        self.sac_env: VecEnv = self.venv
        if self.algorithm.learns_reward:
            self.reward = RewardLearner(cfg, obs_dim, act_dim, self.rng, demos, self.prefs_train, held_out)
            self.sac_env = LearnedRewardVecEnv(
                self.venv, self.reward.net, cfg.reward_offset, cfg.termination, cfg.reward_scale
            )
        self.model: OffPolicyAlgorithm = None  # type: ignore[assignment]  # set by start() or resume()
        self.state: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}  # the latest evaluation with the learned reward's diagnostics

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint"

    @property
    def reward_net(self) -> RewardNet | None:
        return self.reward.net if self.reward is not None else None

    def _run(self) -> Run:
        """What the algorithm's hooks see of this run."""
        return Run(self.cfg, self.model, self.backend, self.rng, self.demos, self.prefs_train, self.reward)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.backend.act(self.model, obs)

    def evaluate(self, with_reward: bool = False) -> dict[str, Any]:
        net = self.reward_net if with_reward else None
        return evaluate(self.act, self.cfg.env_id, self.cfg.seed + 10_000, self.cfg.eval_episodes, net)

    def start(self) -> None:
        """A fresh run: build SAC and run the algorithm's set-up (step 0 is evaluated by `learn`)."""
        self.model = self.backend.make(
            self.sac_env,
            self.cfg.seed,
            self.cfg.device,
            self.algorithm.sac_class(self.backend),
            **sac_kwargs(self.cfg),
        )
        self.algorithm.attach(self._run())
        self.state = {"iteration": 0, "curve": [], "reward_stats": [], "config": self.cfg.to_dict()}
        self.algorithm.setup(self._run())

    def resume(self) -> None:
        self.model, self.state = _load_checkpoint(
            self.checkpoint_path,
            self.sac_env,
            self.cfg,
            self.reward,
            self.rng,
            self.backend,
            self.algorithm.sac_class(self.backend),
        )
        self.algorithm.attach(self._run())

    @property
    def wall_time_s(self) -> float:
        """Seconds of this run so far: every earlier segment up to its last checkpoint, plus this one."""
        return self.state.get("wall_time_s", 0.0) + time.perf_counter() - self._segment_start

    def save_checkpoint(self) -> None:
        now = time.perf_counter()
        self.state["wall_time_s"] = self.state.get("wall_time_s", 0.0) + now - self._segment_start
        self._segment_start = now
        _save_checkpoint(self.checkpoint_path, self.model, self.reward, self.rng, self.state, self.backend)

    def callbacks(self, progress: bool) -> list[TrainerCallback]:
        """The built-in callbacks: evaluation, and with environment steps the checkpoint and the bar."""
        cfg = self.cfg
        built_in: list[TrainerCallback] = [
            EvaluationCallback(cfg.eval_interval or cfg.steps_per_iter, cfg.n_timesteps)
        ]
        if self.algorithm.uses_env:
            built_in.append(CheckpointCallback())
            if progress:
                built_in.append(ProgressBarCallback())
        return built_in

    def learn(
        self,
        callback: BaseCallback | None = None,
        progress: bool = True,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> dict[str, Any]:
        """Alternate SAC chunks with the algorithm's work until `total_steps`; returns results.json.

        `callback` is stable-baselines3's (called by SAC at every step); `callbacks` are the trainer's
        (`aihf.control.callbacks`), run after the built-in evaluation, checkpoint and progress bar."""
        cfg, model = self.cfg, self.model
        # one logger for the whole run: SB3 would open a new event file per learn(), and without a logger
        # of ours it makes an empty /tmp/SB3-<time> directory at every learn(), one per iteration
        events = str(self.out_dir / "tensorboard" / cfg.algo)
        model.set_logger(configure_logger(events, ["tensorboard"]) if cfg.tensorboard else Logger(None, []))
        hooks = [*self.callbacks(progress), *callbacks]
        try:
            for hook in hooks:
                hook.on_train_start(self)
            while self.algorithm.uses_env and model.num_timesteps < cfg.n_timesteps:
                steps = min(cfg.steps_per_iter, cfg.n_timesteps - model.num_timesteps)
                model.learn(steps, reset_num_timesteps=False, callback=callback, tb_log_name=cfg.algo)
                stats = self.algorithm.after_policy_step(self._run())
                for key, value in stats.items():
                    model.logger.record(f"reward/{key}", value)
                if stats:
                    self.state["reward_stats"].append({"iteration": self.state["iteration"], **stats})
                self.state["iteration"] += 1
                for hook in hooks:
                    hook.on_iteration_end(self, steps)
                model.logger.dump(model.num_timesteps)
        except KeyboardInterrupt:
            print(
                f"interrupted: the checkpoint in {self.checkpoint_path} holds iteration "
                f"{self.state['iteration']}; continue with --resume {self.out_dir}"
            )
            raise
        finally:
            for hook in hooks:
                hook.on_train_end(self)
        return self._finish(self.last_eval)

    def _finish(self, final: dict[str, Any]) -> dict[str, Any]:
        cfg, last = self.cfg, self.state["curve"][-1]
        results: dict[str, Any] = {
            "algo": cfg.algo,
            "env": cfg.env_id,
            "seed": cfg.seed,
            "backend": cfg.backend,
            "ent_coef": cfg.ent_coef_label,
            "total_steps": cfg.n_timesteps,
            "env_steps": int(self.model.num_timesteps) if self.algorithm.uses_env else 0,
            "iterations": self.state["iteration"],
            "eval_return_mean": last["eval_return_mean"],
            "eval_return_std": last["eval_return_std"],
            "eval_episodes": cfg.eval_episodes,
            "wall_time_s": round(self.wall_time_s, 2),
        }
        if self.reward is not None:
            # learned vs true return on the final policy's own (evaluation) rollouts
            diag = final if "return_correlation" in final else self.evaluate(with_reward=True)
            results["reward_diagnostics"] = {
                **self.reward.preference_accuracy(),
                "learned_true_return_correlation": diag["return_correlation"],
                "learned_true_step_reward_correlation": diag["step_reward_correlation"],
            }
            self.reward.net.save_pretrained(self.out_dir / "reward_net")
        self.model.save(self.out_dir / "policy.zip")  # BC's too: its actor is the cloned policy
        results["config"] = cfg.to_dict()
        write_curve(self.out_dir / "curve.csv", self.state["curve"])
        write_json(self.out_dir / "results.json", results)
        return results


def check_run_memory(cfg: AIHFControlConfig) -> None:
    """Refuse, before SAC allocates, a replay buffer or a batch that cannot fit (`safety.check_memory`).

    Rough lower bounds in float32: the buffer holds every step (n_timesteps x (2 obs + action + 3)
    numbers: observation, next observation, action, reward, done, timeout); a batch holds its rows and
    the activations of the actor and both critics, forward and backward (rows x (2 obs + action + 3 +
    6 x the SAC layer widths)), rows the largest of batch_size, reward_batch_size and bc_batch_size.
    """
    obs_dim, act_dim = env_dims(cfg.env_id)
    row = 2 * obs_dim + act_dim + 3
    check_memory(
        cfg.n_timesteps * row * 4,
        f"n_timesteps {cfg.n_timesteps} x {row} numbers x 4 bytes of SAC replay buffer ({cfg.env_id})",
        "lower n_timesteps",  # stable-baselines3 keeps the buffer in numpy, on the CPU
    )
    sizes = {k: getattr(cfg, k) for k in ("batch_size", "reward_batch_size", "bc_batch_size")}
    name, rows = max(sizes.items(), key=lambda item: item[1])
    arch = cfg.policy_kwargs["net_arch"]
    widths = [w for part in arch.values() for w in part] if isinstance(arch, dict) else list(arch)
    per_row = row + 6 * sum(widths)
    check_memory(
        rows * per_row * 4,
        f"{name} {rows} x {per_row} numbers x 4 bytes per batch ({cfg.env_id}, net_arch {arch})",
        f"lower {name}",
        cfg.device.startswith("cuda") and torch.cuda.is_available(),
    )


def train(
    cfg: AIHFControlConfig | None,
    out_dir: str | Path,
    demos: Trajectories | None = None,
    prefs: Preferences | None = None,
    resume: bool = False,
    callback: BaseCallback | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    n_timesteps: int | None = None,
) -> dict[str, Any]:
    """Run `cfg.algo`; writes results.json, curve.csv, the reward net and a checkpoint per iteration.

    `callback` goes to stable-baselines3's SAC (every step), `callbacks` to the trainer's loop (every
    iteration; `aihf.control.callbacks`).

    With `resume=True`, `out_dir` must hold a checkpoint; the run continues from it with its saved
    config and data, ignoring `cfg`, `demos` and `prefs`; a seeded CPU run then ends exactly as an
    uninterrupted one would. `n_timesteps` (resume only) extends the budget of the run, finished or not,
    to that many environment steps: it then ends as a run started with that budget would, when the old
    budget is a multiple of `steps_per_iter`.
    """
    out_dir = Path(out_dir)
    ckpt_path, data_dir = out_dir / "checkpoint", out_dir / "data"
    if resume:
        if not ckpt_path.is_dir():
            swapped = ckpt_path.with_name(f".{ckpt_path.name}.old")  # atomic_path's previous copy
            hint = (
                f"; a save was cut short: rename {swapped} to {ckpt_path} to resume"
                if swapped.is_dir()
                else ""
            )
            raise InputError(f"{out_dir}: no checkpoint to resume from ({ckpt_path} missing){hint}")
        checkpoints.verify(ckpt_path)  # a missing, truncated or altered file stops here, named
        saved = json.loads((ckpt_path / "state.json").read_text())["config"]
        saved.setdefault("ent_coef", "auto")  # checkpoints from before the option ran SB3's automatic tuning
        cfg = AIHFControlConfig.from_dict(saved)
        if n_timesteps is not None:
            if n_timesteps < cfg.n_timesteps:
                raise InputError(
                    f"n_timesteps {n_timesteps}: the checkpoint's run has {cfg.n_timesteps}; a resume can "
                    "only extend it"
                )
            cfg = AIHFControlConfig.from_dict({**saved, "n_timesteps": n_timesteps})
        check_run_memory(cfg)
        obs_dim, act_dim = env_dims(cfg.env_id)
        demos_file, prefs_file = data_dir / "demos.npz", data_dir / "prefs.npz"
        demos = load_trajectories(demos_file, obs_dim, act_dim) if demos_file.exists() else None
        prefs = load_preferences(prefs_file, obs_dim, act_dim) if prefs_file.exists() else None
    else:
        if cfg is None:
            raise ValueError("train() needs a config unless resume=True")
        check_run_memory(cfg)
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_dir(ckpt_path)
        if demos is not None:
            save_trajectories(data_dir / "demos.npz", demos)
        if prefs is not None:
            save_preferences(data_dir / "prefs.npz", prefs)
    trainer = Trainer(cfg, out_dir, demos, prefs)
    if resume:
        trainer.resume()
        trainer.state["config"] = cfg.to_dict()  # an extended n_timesteps is the run's from now on
    else:
        trainer.start()
    return trainer.learn(callback, progress, callbacks)
