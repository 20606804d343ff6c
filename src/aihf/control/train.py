"""AIHF for control (METHOD.md Algorithm 1 with SAC) and the baselines that share its data and budget.

One loop serves every algorithm that runs SAC:

    for k in iterations:
        policy step   SAC.learn(steps_per_iter, reset_num_timesteps=False) on the learned reward
                      (one SAC model and replay buffer for the whole run)
        reward step   reward_updates_per_iter Adam steps on aihf_reward_loss: demonstration term
                      (demo transitions vs the agent's most recent transitions) + Bradley-Terry on
                      preference segments (segment return = sum of r_theta over the segment)
        re-score      the whole replay buffer with the new r_theta, so SAC's targets are not stale
        evaluate      deterministic true return; checkpoint (atomic)

`aihf` runs both terms, `pref-only` sets alpha = 0, `demo-only` drops preferences, `rlhf` fits the
reward on preferences once (after a BC-initialised actor) and keeps it frozen, `sac-true` uses the true
reward, and `bc` only clones the demonstrations.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure as configure_logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from tqdm.auto import tqdm

from aihf import checkpoints
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
from aihf.control.reward import LearnedRewardVecEnv, RewardNet, buffer_actions_to_env, rescore_replay_buffer
from aihf.errors import InputError
from aihf.io import atomic_path, write_json, write_text
from aihf.losses import aihf_reward_loss

JOINT_ALGOS = ("aihf", "pref-only", "demo-only")


class RewardDivergedError(RuntimeError):
    """The learned reward became NaN/inf; the last good checkpoint is left as it was."""


# ---------------------------------------------------------------------------------------------------
# environments


def make_env(env_id: str, seed: int) -> DummyVecEnv:
    """A seeded one-env DummyVecEnv with a Monitor, so episode statistics are true returns."""
    env_dims(env_id)
    venv = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
    venv.seed(seed)
    return venv


def env_dims(env_id: str) -> tuple[int, int]:
    """Observation and action sizes; a clear error for an unknown id or a non-Box action space."""
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise InputError(f"--env {env_id}: not a registered gymnasium environment ({err})") from err
    if not isinstance(env.action_space, gym.spaces.Box):
        raise InputError(f"--env {env_id}: action space is {env.action_space}, SAC needs a Box action space")
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    env.close()
    return obs_dim, act_dim


def _env_snapshot(env: gym.Env) -> dict[str, Any]:
    """Everything needed to continue an episode bit-exactly. MuJoCo envs re-create themselves when
    unpickled, so their physics state and RNG are stored separately."""
    unwrapped = env.unwrapped
    snap: dict[str, Any] = {"env": env, "np_random": unwrapped.np_random.bit_generator.state}
    if hasattr(unwrapped, "data") and hasattr(unwrapped, "model"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm-start, time, ...: bit-exact
        state = np.empty(mujoco.mj_stateSize(unwrapped.model, spec))
        mujoco.mj_getState(unwrapped.model, unwrapped.data, state, spec)
        snap["mujoco"] = state
    return snap


def _env_restore(snap: dict[str, Any]) -> gym.Env:
    env = snap["env"]
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = snap["np_random"]
    env.unwrapped.np_random = generator
    if "mujoco" in snap:
        import mujoco

        unwrapped = env.unwrapped
        mujoco.mj_setState(
            unwrapped.model, unwrapped.data, snap["mujoco"], mujoco.mjtState.mjSTATE_INTEGRATION
        )
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
    return env


def _base_venv(venv: VecEnv) -> DummyVecEnv:
    return venv.venv if isinstance(venv, LearnedRewardVecEnv) else venv  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# data as tensors


@dataclass
class Transitions:
    obs: torch.Tensor
    act: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor

    def __len__(self) -> int:
        return len(self.obs)

    def rewards(self, net: RewardNet, rows: np.ndarray | None = None) -> torch.Tensor:
        if rows is None:
            return net(self.obs, self.act, self.next_obs, self.done)
        idx = torch.as_tensor(rows)
        return net(self.obs[idx], self.act[idx], self.next_obs[idx], self.done[idx])


def trajectory_transitions(traj: Trajectories, cfg: AIHFControlConfig, what: str) -> Transitions:
    if traj.next_observations is None:
        if cfg.reward_use_next_obs:
            raise InputError(f"{what}: the reward takes next states but the file has no 'next_observations'")
        next_obs = traj.observations  # unused by the net
    else:
        next_obs = traj.next_observations
    done = traj.terminated if cfg.termination == "env" else np.zeros_like(traj.terminated)
    return Transitions(
        torch.as_tensor(traj.observations),
        torch.as_tensor(traj.actions),
        torch.as_tensor(next_obs),
        torch.as_tensor(done, dtype=torch.float32),
    )


def buffer_transitions(model: SAC, window: int) -> Transitions:
    """The agent's most recent `window` transitions from SAC's replay buffer (its current policy's)."""
    buf = model.replay_buffer
    size = buf.buffer_size if buf.full else buf.pos
    window = min(window, size)
    rows = (buf.pos - window + np.arange(window)) % buf.buffer_size
    flat = lambda a: torch.as_tensor(a[rows].reshape(window * buf.n_envs, -1), dtype=torch.float32)  # noqa: E731
    done = (buf.dones[rows] * (1 - buf.timeouts[rows])).reshape(-1)
    actions = torch.as_tensor(buffer_actions_to_env(buf, buf.actions[rows].reshape(window * buf.n_envs, -1)))
    return Transitions(flat(buf.observations), actions, flat(buf.next_observations), torch.as_tensor(done))


def segment_returns(
    net: RewardNet, trans: Transitions, starts: np.ndarray, segments: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of r_theta over segment a and segment b of each pair, in one batched forward pass."""
    n = len(segments)
    traj = np.concatenate([segments[:, 0], segments[:, 3]])
    begin = starts[traj] + np.concatenate([segments[:, 1], segments[:, 4]])
    lengths = np.concatenate([segments[:, 2] - segments[:, 1], segments[:, 5] - segments[:, 4]])
    seg_id = np.repeat(np.arange(2 * n), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rewards = trans.rewards(net, np.repeat(begin, lengths) + offsets)
    totals = torch.zeros(2 * n, dtype=rewards.dtype).index_add(0, torch.as_tensor(seg_id), rewards)
    return totals[:n], totals[n:]


@dataclass
class PreferenceTensors:
    trans: Transitions
    starts: np.ndarray
    segments: np.ndarray
    labels: torch.Tensor

    @staticmethod
    def build(prefs: Preferences, cfg: AIHFControlConfig) -> PreferenceTensors:
        return PreferenceTensors(
            trajectory_transitions(prefs.trajectories, cfg, "preferences"),
            prefs.trajectories.starts,
            prefs.segments,
            torch.as_tensor(prefs.labels),
        )

    @torch.no_grad()
    def accuracy(self, net: RewardNet) -> float:
        """Fraction of pairs whose learned order agrees with the label (ties in the label skipped)."""
        keep = (self.labels != 0.5).numpy()
        if not keep.any():
            return float("nan")
        ret_a, ret_b = segment_returns(net, self.trans, self.starts, self.segments[keep])
        return float(((ret_a > ret_b) == (self.labels[keep] > 0.5)).float().mean())


# ---------------------------------------------------------------------------------------------------
# reward step and behaviour cloning


def reward_step(
    net: RewardNet,
    optimizer: torch.optim.Optimizer,
    cfg: AIHFControlConfig,
    rng: np.random.Generator,
    demos: Transitions | None,
    agent: Transitions | None,
    prefs: PreferenceTensors | None,
    alpha: float,
    updates: int,
) -> dict[str, float]:
    """`updates` Adam steps on -(alpha * L1 + L2) + centring; raises RewardDivergedError on NaN/inf."""
    use_demo = demos is not None and agent is not None and len(agent) > 0 and alpha > 0
    stats: dict[str, float] = {}
    for _ in range(updates):
        demo_r = agent_r = chosen = rejected = labels = None
        if use_demo:
            demo_r = demos.rewards(net, rng.integers(len(demos), size=cfg.reward_batch_size))
            agent_r = agent.rewards(net, rng.integers(len(agent), size=cfg.reward_batch_size))
        if prefs is not None:
            pick = rng.integers(len(prefs.segments), size=cfg.pref_batch_size)
            chosen, rejected = segment_returns(net, prefs.trans, prefs.starts, prefs.segments[pick])
            labels = prefs.labels[torch.as_tensor(pick)]
        out = aihf_reward_loss(
            demo_rewards=demo_r,
            agent_rewards=agent_r,
            chosen_rewards=chosen,
            rejected_rewards=rejected,
            alpha=alpha,
            demo_form=cfg.demo_form,  # type: ignore[arg-type]
            preference_labels=labels,
            centering_coef=cfg.centering_coef,
        )
        optimizer.zero_grad()
        out.loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        finite = torch.isfinite(out.loss) and all(torch.isfinite(p).all() for p in net.parameters())
        if not finite:
            raise RewardDivergedError(
                f"the learned reward diverged (loss {out.loss.item()}); try a smaller reward_lr, "
                "demo_form=logistic, centering_coef > 0 or reward_weight_decay > 0"
            )
        stats = {"loss": out.loss.item(), "demo": out.demo.item(), "preference": out.preference.item()}
    return stats


def behaviour_cloning(
    model: SAC, demos: Trajectories, cfg: AIHFControlConfig, rng: np.random.Generator, steps: int
):
    """Fit the SAC actor's deterministic action to the demonstrations (MSE in SAC's [-1, 1] action scale)."""
    obs = torch.as_tensor(demos.observations)
    target = torch.as_tensor(np.clip(model.policy.scale_action(demos.actions), -0.999, 0.999))
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=cfg.bc_lr)
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(len(obs), size=cfg.bc_batch_size))
        loss = torch.nn.functional.mse_loss(model.actor(obs[idx], deterministic=True), target[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# ---------------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    model: SAC, env_id: str, seed: int, episodes: int, reward_net: RewardNet | None = None
) -> dict[str, Any]:
    """Deterministic true return over `episodes` seeded episodes; with a reward net, also the learned
    return of the same rollouts and its correlation with the true one (per episode and per step)."""
    env = gym.make(env_id)
    true_returns, learned_returns, true_steps, learned_steps = [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        rows, total, done = [], 0.0, False
        while not done:
            action = _deterministic_action(model, obs)
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


@torch.no_grad()
def _deterministic_action(model: SAC, obs: np.ndarray) -> np.ndarray:
    """`model.predict(obs, deterministic=True)` without its per-call bookkeeping (~1.5x faster)."""
    scaled = model.actor(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1), deterministic=True)
    return model.policy.unscale_action(scaled.numpy()[0])


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


def _save_checkpoint(
    path: Path,
    model: SAC,
    net: RewardNet | None,
    optimizer: torch.optim.Optimizer | None,
    rng: np.random.Generator,
    state: dict[str, Any],
) -> None:
    """SAC + replay buffer, reward net + optimiser, every RNG and the environment's exact state."""
    venv = model.get_env()
    base = _base_venv(venv)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        model.save(tmp / "sac.zip")
        model.save_replay_buffer(tmp / "replay.pkl")
        if net is not None and optimizer is not None:
            torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict()}, tmp / "reward.pt")
        runtime = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "random": random.getstate(),
            "data_rng": rng.bit_generator.state,
            "action_space": model.action_space.np_random.bit_generator.state,
            "envs": [_env_snapshot(env) for env in base.envs],
            "wrapper_last_obs": getattr(venv, "_last_obs", None),
        }
        with open(tmp / "runtime.pkl", "wb") as fh:
            pickle.dump(runtime, fh)
        write_json(tmp / "state.json", state)
        checkpoints.write_manifest(tmp)  # last: resume verifies every file against it


def _load_checkpoint(
    path: Path,
    venv: VecEnv,
    cfg: AIHFControlConfig,
    net: RewardNet | None,
    optimizer,
    rng: np.random.Generator,
) -> tuple[SAC, dict[str, Any]]:
    # force_reset=False keeps the saved last observation: the restored env continues its episode
    model = SAC.load(path / "sac.zip", env=venv, device=cfg.device, force_reset=False)
    model.load_replay_buffer(path / "replay.pkl")
    if net is not None:
        saved = torch.load(path / "reward.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["optimizer"])
    with open(path / "runtime.pkl", "rb") as fh:
        runtime = pickle.load(fh)  # our own checkpoint file
    base = _base_venv(venv)
    base.envs = [_env_restore(snap) for snap in runtime["envs"]]
    if isinstance(venv, LearnedRewardVecEnv):
        venv._last_obs = runtime["wrapper_last_obs"]
    torch.set_rng_state(runtime["torch"])
    np.random.set_state(runtime["numpy"])
    random.setstate(runtime["random"])
    rng.bit_generator.state = runtime["data_rng"]
    model.action_space.np_random.bit_generator.state = runtime["action_space"]
    return model, json.loads((path / "state.json").read_text())


# ---------------------------------------------------------------------------------------------------
# the run


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
    needs_demos = cfg.algo in ("aihf", "demo-only", "rlhf", "bc")
    needs_prefs = cfg.algo in ("aihf", "pref-only", "rlhf")
    demos = prefs = None
    if needs_demos:
        if demos_path is None:
            raise InputError(
                f"algo {cfg.algo} needs demonstrations: pass --demos (no shipped data for {cfg.env_id})"
            )
        if str(demos_path).startswith("minari:"):
            demos = load_minari(str(demos_path).removeprefix("minari:"))
            _check_sizes(demos, str(demos_path), obs_dim, act_dim)
        else:
            demos = load_trajectories(demos_path, obs_dim, act_dim)
    if needs_prefs and prefs_path is None:
        raise InputError(
            f"algo {cfg.algo} needs preferences: pass --prefs (no shipped data for {cfg.env_id})"
        )
    if prefs_path is not None and cfg.algo != "sac-true":
        # demo-only does not train on them, but its learned reward is still scored on the held-out pairs
        prefs = load_preferences(prefs_path, obs_dim, act_dim)
    return demos, prefs


def train(
    cfg: AIHFControlConfig | None,
    out_dir: str | Path,
    demos: Trajectories | None = None,
    prefs: Preferences | None = None,
    resume: bool = False,
    callback: BaseCallback | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `cfg.algo`; writes results.json, curve.csv, the reward net and a checkpoint per iteration.

    With `resume=True`, `out_dir` must hold a checkpoint; the run continues from it with its saved
    config and data, ignoring `cfg`, `demos` and `prefs`; a seeded CPU run then ends exactly as an
    uninterrupted one would.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint"
    data_dir = out_dir / "data"
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
        cfg = AIHFControlConfig.from_dict(json.loads((ckpt_path / "state.json").read_text())["config"])
        obs_dim, act_dim = env_dims(cfg.env_id)
        demos = (
            load_trajectories(data_dir / "demos.npz", obs_dim, act_dim)
            if (data_dir / "demos.npz").exists()
            else None
        )
        prefs = (
            load_preferences(data_dir / "prefs.npz", obs_dim, act_dim)
            if (data_dir / "prefs.npz").exists()
            else None
        )
    else:
        if cfg is None:
            raise ValueError("train() needs a config unless resume=True")
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_dir(ckpt_path)
        if demos is not None:
            save_trajectories(data_dir / "demos.npz", demos)
        if prefs is not None:
            save_preferences(data_dir / "prefs.npz", prefs)
    start_time = time.perf_counter()
    set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    venv = make_env(cfg.env_id, cfg.seed)
    obs_dim, act_dim = env_dims(cfg.env_id)

    prefs_train = prefs_held = None
    if prefs is not None:
        train_part, held_part = (
            prefs.split(cfg.pref_holdout, cfg.seed) if cfg.pref_holdout > 0 else (prefs, None)
        )
        prefs_train = PreferenceTensors.build(train_part, cfg)
        prefs_held = (
            PreferenceTensors.build(held_part, cfg) if held_part is not None and len(held_part) else None
        )
    demo_trans = trajectory_transitions(demos, cfg, "demonstrations") if demos is not None else None

    learns_reward = cfg.algo not in ("sac-true", "bc")
    net = optimizer = None
    sac_env: VecEnv = venv
    if learns_reward:
        net = RewardNet(obs_dim, act_dim, cfg.reward_hidden, cfg.reward_use_next_obs, cfg.reward_use_done)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.reward_lr, weight_decay=cfg.reward_weight_decay)
        sac_env = LearnedRewardVecEnv(venv, net, cfg.reward_offset, cfg.termination, cfg.reward_scale)

    if resume:
        model, state = _load_checkpoint(ckpt_path, sac_env, cfg, net, optimizer, rng)
    else:
        model = SAC(
            "MlpPolicy",
            sac_env,
            learning_rate=cfg.sac_lr,
            buffer_size=max(cfg.total_steps, 1),
            learning_starts=cfg.learning_starts,
            batch_size=cfg.sac_batch_size,
            gamma=cfg.gamma,
            policy_kwargs={"net_arch": list(cfg.sac_hidden)},
            seed=cfg.seed,
            device=cfg.device,
        )
        state = {"iteration": 0, "curve": [], "reward_stats": [], "config": cfg.to_dict()}
        if cfg.algo in ("rlhf", "bc"):
            behaviour_cloning(model, demos, cfg, rng, cfg.bc_steps)
        if cfg.algo == "rlhf":
            reward_step(net, optimizer, cfg, rng, None, None, prefs_train, 0.0, cfg.rlhf_reward_steps)
        first = evaluate(model, cfg.env_id, cfg.seed + 10_000, cfg.eval_episodes)
        state["curve"].append(
            {"step": 0, "eval_return_mean": first["return_mean"], "eval_return_std": first["return_std"]}
        )
        if cfg.algo != "bc":
            _save_checkpoint(ckpt_path, model, net, optimizer, rng, state)

    if cfg.tensorboard:  # one logger for the whole run (SB3 would open a new event file per learn())
        model.set_logger(configure_logger(str(out_dir / "tensorboard" / cfg.algo), ["tensorboard"]))
    final: dict[str, Any] = {
        "return_mean": state["curve"][-1]["eval_return_mean"],
        "return_std": state["curve"][-1]["eval_return_std"],
    }
    eval_every = cfg.eval_interval or cfg.steps_per_iter
    if cfg.algo != "bc":
        bar = tqdm(
            total=cfg.total_steps,
            initial=model.num_timesteps,
            unit="step",
            desc=cfg.algo,
            disable=not progress,
        )
        try:
            while model.num_timesteps < cfg.total_steps:
                iteration = state["iteration"]
                steps = min(cfg.steps_per_iter, cfg.total_steps - model.num_timesteps)
                model.learn(steps, reset_num_timesteps=False, callback=callback, tb_log_name=cfg.algo)
                if cfg.algo in JOINT_ALGOS:
                    stats = reward_step(
                        net,
                        optimizer,
                        cfg,
                        rng,
                        demo_trans if cfg.algo != "pref-only" else None,
                        buffer_transitions(model, cfg.agent_window or cfg.steps_per_iter),
                        prefs_train if cfg.algo != "demo-only" else None,
                        cfg.alpha if cfg.algo != "pref-only" else 0.0,
                        cfg.reward_updates_per_iter,
                    )
                    rescore_replay_buffer(model.replay_buffer, net, cfg.reward_offset, cfg.reward_scale)
                    for key, value in stats.items():
                        model.logger.record(f"reward/{key}", value)
                    state["reward_stats"].append({"iteration": iteration, **stats})
                state["iteration"] = iteration + 1
                done = model.num_timesteps >= cfg.total_steps
                if done or model.num_timesteps // eval_every > (model.num_timesteps - steps) // eval_every:
                    final = evaluate(model, cfg.env_id, cfg.seed + 10_000, cfg.eval_episodes, net)
                    state["curve"].append(
                        {
                            "step": model.num_timesteps,
                            "eval_return_mean": final["return_mean"],
                            "eval_return_std": final["return_std"],
                        }
                    )
                    model.logger.record("eval/true_return", final["return_mean"])
                    bar.set_postfix(true_return=f"{final['return_mean']:.1f}")
                model.logger.dump(model.num_timesteps)
                _save_checkpoint(ckpt_path, model, net, optimizer, rng, state)
                bar.update(steps)
        except KeyboardInterrupt:
            bar.close()
            print(
                f"interrupted: the checkpoint in {ckpt_path} holds iteration {state['iteration']}; "
                f"continue with --resume {out_dir}"
            )
            raise
        bar.close()

    results: dict[str, Any] = {
        "algo": cfg.algo,
        "env": cfg.env_id,
        "seed": cfg.seed,
        "total_steps": cfg.total_steps,
        "env_steps": 0 if cfg.algo == "bc" else int(model.num_timesteps),
        "iterations": state["iteration"],
        "eval_return_mean": final["return_mean"],
        "eval_return_std": final["return_std"],
        "eval_episodes": cfg.eval_episodes,
        "wall_time_s": round(time.perf_counter() - start_time, 2),
    }
    if net is not None:
        # learned vs true return on the final policy's own (evaluation) rollouts
        diag = (
            final
            if "return_correlation" in final
            else evaluate(model, cfg.env_id, cfg.seed + 10_000, cfg.eval_episodes, net)
        )
        results["reward_diagnostics"] = {
            "heldout_preference_accuracy": prefs_held.accuracy(net) if prefs_held is not None else None,
            "train_preference_accuracy": prefs_train.accuracy(net) if prefs_train is not None else None,
            "learned_true_return_correlation": diag["return_correlation"],
            "learned_true_step_reward_correlation": diag["step_reward_correlation"],
        }
        net.save_pretrained(out_dir / "reward_net")
    if cfg.algo != "bc":
        model.save(out_dir / "policy.zip")
    results["config"] = cfg.to_dict()
    write_curve(out_dir / "curve.csv", state["curve"])
    write_json(out_dir / "results.json", results)
    return results
