"""The expert-data pipeline (paper appendix A.1.1, after Brown et al. 2019).

1. train SAC on the true reward (either backend; the expert may use bigger networks than the compared
   agents: it only makes data), saving a checkpoint every `checkpoint_every` steps; a killed run
   continues from its newest checkpoint and replay buffer (not bit-exact: the environment restarts);
2. roll out every checkpoint from step `rollout_from` on (stochastic policy) for
   `episodes_per_checkpoint` episodes;
3. bucket all trajectories by true return into low / medium / high (by the `split` quantiles);
4. demonstrations = high (or a random `max_demos` of them); preferences = random pairs from low +
   medium, whole trajectories or random fixed-length segments, labelled by true segment return:
   deterministically (1, 0, or 0.5 for a tie) or by sampling Bradley-Terry with a temperature;
5. write demos.npz, prefs.npz and the quality table (mean +- std true return per set, cf. the paper's
   Table 1: non-preferred / preferred / demonstrations, as whole-trajectory returns, with the
   segment returns beside them when preferences compare segments).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import scipy.special
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from aihf.control.backends import get_backend
from aihf.control.config import parse_ent_coef
from aihf.control.data import Preferences, Trajectories, save_preferences, save_trajectories
from aihf.control.envs import make_env
from aihf.control.state import load_replay, save_replay
from aihf.errors import InputError
from aihf.io import atomic_path, write_json, write_text
from aihf.validation import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SEED, Range, validate_config


@dataclass
class CollectConfig:
    env_id: str = "Pendulum-v1"
    seed: int = 0
    expert_steps: int = 12_000
    checkpoint_every: int = 1000
    episodes_per_checkpoint: int = 5
    rollout_from: int = 0  # checkpoints saved before this step are not rolled out
    split: tuple[float, float] = (1 / 3, 2 / 3)  # return quantiles separating low / medium / high
    num_preferences: int = 500
    max_demos: int = 0  # keep at most this many demonstration trajectories (0: the whole top bucket)
    segment_length: int = 50  # 0 means whole trajectories
    label_mode: Literal["deterministic", "bradley-terry"] = "deterministic"
    temperature: float = 1.0  # Bradley-Terry: P(a > b) = sigmoid((R_a - R_b) / temperature)
    backend: str = "sb3"
    sac_hidden: tuple[int, ...] = (64, 64)
    learning_starts: int = 1000
    ent_coef: str | float = "auto"  # the expert only makes data: SB3's automatic entropy tuning

    def __post_init__(self) -> None:
        self.ent_coef = parse_ent_coef(self.ent_coef)
        validate_config(self, COLLECT_RANGES)
        if len(self.split) != 2 or not 0 < self.split[0] < self.split[1] < 1:
            raise InputError(f"split={self.split}: expected two increasing quantiles in (0, 1)")
        if self.checkpoint_every > self.expert_steps:
            raise InputError(
                f"field 'checkpoint_every' = {self.checkpoint_every}: expected no more than "
                f"expert_steps ({self.expert_steps})"
            )
        if self.rollout_from >= self.expert_steps:
            raise InputError(
                f"field 'rollout_from' = {self.rollout_from}: expected fewer than expert_steps "
                f"({self.expert_steps})"
            )
        get_backend(self.backend)
        # checkpoints are saved every checkpoint_every steps; those from rollout_from on are rolled out
        first = max(-(-self.rollout_from // self.checkpoint_every), 1)
        episodes = (self.expert_steps // self.checkpoint_every - first + 1) * self.episodes_per_checkpoint
        if episodes < 3:  # the low/medium pool that preferences pair up needs two of them
            raise InputError(
                f"--expert-steps {self.expert_steps} / --checkpoint-every {self.checkpoint_every} x "
                f"--episodes-per-checkpoint {self.episodes_per_checkpoint} gives {episodes} episodes, "
                "expected at least 3"
            )


COLLECT_RANGES: dict[str, Range] = {
    "seed": SEED,
    "expert_steps": AT_LEAST_1,
    "checkpoint_every": AT_LEAST_1,
    "episodes_per_checkpoint": AT_LEAST_1,
    "rollout_from": NON_NEGATIVE,
    "split": Range(0, 1, low_open=True, high_open=True),
    "num_preferences": AT_LEAST_1,
    "max_demos": NON_NEGATIVE,
    "segment_length": NON_NEGATIVE,
    "temperature": POSITIVE,
    "sac_hidden": AT_LEAST_1,
    "learning_starts": NON_NEGATIVE,
    "ent_coef": POSITIVE,  # when a number; "auto" / "auto_<init>" is checked by parse_ent_coef
}


def rollout(
    model: BaseAlgorithm, env_id: str, seed: int, episodes: int, deterministic: bool = False
) -> list[dict]:
    """Episodes of `model` with true rewards, as dicts in the trajectory file's layout."""
    env = gym.make(env_id)
    out = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        rows: dict[str, list] = {
            k: [] for k in ("observations", "actions", "rewards", "terminated", "truncated")
        }
        rows["next_observations"] = []
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(rows, (obs, action, reward, terminated, truncated, next_obs)):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
        out.append({k: np.asarray(v) for k, v in rows.items()})
    env.close()
    return out


def make_preferences(pool: Trajectories, cfg: CollectConfig, rng: np.random.Generator) -> Preferences:
    """Random pairs of (segments of) distinct pool trajectories, labelled by true segment return."""
    if len(pool) < 2:
        raise InputError("need at least two low/medium trajectories to form preference pairs")
    segments = np.zeros((cfg.num_preferences, 6), dtype=np.int64)
    for i in range(cfg.num_preferences):
        a, b = rng.choice(len(pool), size=2, replace=False)
        for col, t in ((0, a), (3, b)):
            length = pool.lengths[t]
            seg = length if cfg.segment_length <= 0 else min(cfg.segment_length, length)
            start = int(rng.integers(0, length - seg + 1))
            segments[i, col : col + 3] = (t, start, start + seg)
    starts = pool.starts
    seg_return = lambda t, s, e: float(pool.rewards[starts[t] + s : starts[t] + e].sum())  # noqa: E731
    ret_a = np.array([seg_return(*row[:3]) for row in segments])
    ret_b = np.array([seg_return(*row[3:]) for row in segments])
    if cfg.label_mode == "deterministic":
        labels = np.where(ret_a > ret_b, 1.0, np.where(ret_a < ret_b, 0.0, 0.5))
    else:
        p = scipy.special.expit((ret_a - ret_b) / cfg.temperature)
        labels = (rng.random(len(p)) < p).astype(np.float64)
    return Preferences(pool, segments, labels.astype(np.float32))


def quality_table(low: Trajectories, medium: Trajectories, high: Trajectories, prefs: Preferences) -> dict:
    """Mean +- std true return of each set. For preferences: the whole trajectories the preferred and
    non-preferred segments come from (the paper's Table 1 columns), and the segments themselves."""
    starts = prefs.trajectories.starts
    rew = prefs.trajectories.rewards
    whole = prefs.trajectories.returns()
    ret = lambda t, s, e: float(rew[starts[t] + s : starts[t] + e].sum())  # noqa: E731
    ret_a = np.array([ret(*row[:3]) for row in prefs.segments])
    ret_b = np.array([ret(*row[3:]) for row in prefs.segments])
    a_wins = prefs.labels >= 0.5
    traj_w = np.where(a_wins, prefs.segments[:, 0], prefs.segments[:, 3])
    traj_l = np.where(a_wins, prefs.segments[:, 3], prefs.segments[:, 0])
    rows = {
        "low trajectories": low.returns(),
        "medium trajectories": medium.returns(),
        "high trajectories (demonstrations)": high.returns(),
        "non-preferred (whole trajectories)": whole[traj_l],
        "preferred (whole trajectories)": whole[traj_w],
        "non-preferred segments": np.where(a_wins, ret_b, ret_a),
        "preferred segments": np.where(a_wins, ret_a, ret_b),
    }
    return {
        name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "count": len(v)}
        for name, v in rows.items()
    }


def format_quality(table: dict, env_id: str) -> str:
    lines = [f"| {env_id} set | count | true return (mean +- std) |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {row['count']} | {row['mean']:.1f} +- {row['std']:.1f} |" for name, row in table.items()
    ]
    return "\n".join(lines) + "\n"


class _ExpertCheckpoints(BaseCallback):
    """Every `every` steps: the policy as `sac_<N>_steps.zip` (kept, for the rollouts) and the replay
    buffer as `replay_<N>.npz` (only the newest kept), each written atomically, so that a killed
    expert run continues from the newest step that has both."""

    def __init__(self, every: int, directory: Path) -> None:
        super().__init__()
        self.every, self.directory = every, directory

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            step = self.num_timesteps
            with atomic_path(self.directory / f"replay_{step}.npz") as tmp:
                save_replay(tmp, self.model.replay_buffer)
            with atomic_path(self.directory / f"sac_{step}_steps.zip") as tmp:
                self.model.save(tmp)
            for old in self.directory.glob("replay_*.npz"):
                if old.name != f"replay_{step}.npz":
                    old.unlink()
        return True


def _checkpoints(directory: Path) -> dict[int, Path]:
    found = {}
    for path in directory.glob("sac_*_steps.zip"):
        match = re.fullmatch(r"sac_(\d+)_steps\.zip", path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def train_expert(cfg: CollectConfig, ckpt_dir: Path) -> dict[int, Path]:
    """Train (or continue training) the expert; returns its checkpoints by step."""
    backend = get_backend(cfg.backend)
    venv = make_env(cfg.env_id, cfg.seed)  # an unknown environment stops before anything is written
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    saved = _checkpoints(ckpt_dir)
    resumable = [s for s in saved if (ckpt_dir / f"replay_{s}.npz").is_file()]
    if saved and max(saved) >= cfg.expert_steps:
        return saved
    if resumable:
        step = max(resumable)
        print(f"continuing the expert from its checkpoint at step {step} ({ckpt_dir})")
        model = backend.sac_class.load(saved[step], env=venv, device="cpu")
        load_replay(ckpt_dir / f"replay_{step}.npz", model.replay_buffer)
    else:
        model = backend.make(
            venv,
            cfg.seed,
            "cpu",
            learning_starts=cfg.learning_starts,
            buffer_size=min(cfg.expert_steps, 1_000_000),
            ent_coef=cfg.ent_coef,
            policy_kwargs={"net_arch": list(cfg.sac_hidden)},
        )
    model.learn(
        cfg.expert_steps - model.num_timesteps,
        callback=_ExpertCheckpoints(cfg.checkpoint_every, ckpt_dir),
        reset_num_timesteps=False,
        progress_bar=False,
    )
    return _checkpoints(ckpt_dir)


def collect(cfg: CollectConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run the whole pipeline; returns the quality table. Writes demos.npz, prefs.npz, quality.{json,md}."""
    out_dir = Path(out_dir)
    checkpoints = train_expert(cfg, out_dir / "expert_checkpoints")
    sac_class = get_backend(cfg.backend).sac_class
    episodes = []
    chosen = [(step, path) for step, path in checkpoints.items() if step >= cfg.rollout_from]
    for k, (_, path) in enumerate(tqdm(chosen, desc="roll out checkpoints", disable=not progress)):
        policy = sac_class.load(path, device="cpu")
        episodes += rollout(policy, cfg.env_id, cfg.seed * 100_000 + k * 1000, cfg.episodes_per_checkpoint)
    everything = Trajectories.from_episodes(episodes, env_id=cfg.env_id)
    returns = everything.returns()
    lo, hi = np.quantile(returns, cfg.split)
    order = np.argsort(returns, kind="stable")
    low = everything.select(order[returns[order] < lo])
    medium = everything.select(order[(returns[order] >= lo) & (returns[order] < hi)])
    high = everything.select(order[returns[order] >= hi])
    pool = everything.select(order[returns[order] < hi])
    rng = np.random.default_rng(cfg.seed)
    prefs = make_preferences(pool, cfg, rng)
    if 0 < cfg.max_demos < len(high):  # a random subset of the top bucket: smaller files to ship
        high = high.select(np.sort(rng.choice(len(high), size=cfg.max_demos, replace=False)))
    save_trajectories(out_dir / "demos.npz", high)
    save_preferences(out_dir / "prefs.npz", prefs)
    table = quality_table(low, medium, high, prefs)
    write_json(out_dir / "quality.json", {"config": asdict(cfg), "quality": table})
    write_text(out_dir / "quality.md", format_quality(table, cfg.env_id))
    return table
