"""The expert-data pipeline (paper appendix A.1.1, after Brown et al. 2019).

1. train SAC on the true reward, saving a checkpoint every `checkpoint_every` steps;
2. roll out every checkpoint (stochastic policy) for `episodes_per_checkpoint` episodes;
3. bucket all trajectories by true return into low / medium / high (by the `split` quantiles);
4. demonstrations = high; preferences = random pairs from low + medium, whole trajectories or random
   fixed-length segments, labelled by true segment return: deterministically (1, 0, or 0.5 for a tie)
   or by sampling Bradley-Terry with a temperature (noisy labels);
5. write demos.npz, prefs.npz and the quality table (mean +- std true return per set, cf. the paper's
   Table 1: non-preferred / preferred / demonstrations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import scipy.special
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CheckpointCallback
from tqdm.auto import tqdm

from aihf.control.data import Preferences, Trajectories, save_preferences, save_trajectories
from aihf.control.train import make_env
from aihf.errors import InputError
from aihf.io import write_json, write_text
from aihf.validation import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SEED, Range, validate_config


@dataclass
class CollectConfig:
    env_id: str = "Pendulum-v1"
    seed: int = 0
    expert_steps: int = 12_000
    checkpoint_every: int = 1000
    episodes_per_checkpoint: int = 5
    split: tuple[float, float] = (1 / 3, 2 / 3)  # return quantiles separating low / medium / high
    num_preferences: int = 500
    segment_length: int = 50  # 0 means whole trajectories
    label_mode: Literal["deterministic", "bradley-terry"] = "deterministic"
    temperature: float = 1.0  # Bradley-Terry: P(a > b) = sigmoid((R_a - R_b) / temperature)
    sac_hidden: tuple[int, ...] = (64, 64)
    learning_starts: int = 1000

    def __post_init__(self) -> None:
        validate_config(self, COLLECT_RANGES)
        if len(self.split) != 2 or not 0 < self.split[0] < self.split[1] < 1:
            raise InputError(f"split={self.split}: expected two increasing quantiles in (0, 1)")
        episodes = self.expert_steps // self.checkpoint_every * self.episodes_per_checkpoint
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
    "split": Range(0, 1, low_open=True, high_open=True),
    "num_preferences": AT_LEAST_1,
    "segment_length": NON_NEGATIVE,
    "temperature": POSITIVE,
    "sac_hidden": AT_LEAST_1,
    "learning_starts": NON_NEGATIVE,
}


def rollout(model: SAC, env_id: str, seed: int, episodes: int, deterministic: bool = False) -> list[dict]:
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
    """Mean +- std true return of each set; for preferences, of the preferred / non-preferred segments."""
    starts = prefs.trajectories.starts
    rew = prefs.trajectories.rewards
    ret = lambda t, s, e: float(rew[starts[t] + s : starts[t] + e].sum())  # noqa: E731
    ret_a = np.array([ret(*row[:3]) for row in prefs.segments])
    ret_b = np.array([ret(*row[3:]) for row in prefs.segments])
    a_wins = prefs.labels >= 0.5
    preferred = np.where(a_wins, ret_a, ret_b)
    rejected = np.where(a_wins, ret_b, ret_a)
    rows = {
        "low trajectories": low.returns(),
        "medium trajectories": medium.returns(),
        "high trajectories (demonstrations)": high.returns(),
        "non-preferred segments": rejected,
        "preferred segments": preferred,
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


def collect(cfg: CollectConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run the whole pipeline; returns the quality table. Writes demos.npz, prefs.npz, quality.{json,md}."""
    out_dir = Path(out_dir)
    venv = make_env(cfg.env_id, cfg.seed)
    ckpt_dir = out_dir / "expert_checkpoints"
    model = SAC(
        "MlpPolicy",
        venv,
        learning_starts=cfg.learning_starts,
        policy_kwargs={"net_arch": list(cfg.sac_hidden)},
        seed=cfg.seed,
        device="cpu",
    )
    model.learn(
        cfg.expert_steps,
        callback=CheckpointCallback(cfg.checkpoint_every, str(ckpt_dir), name_prefix="sac"),
        progress_bar=False,
    )
    checkpoints = sorted(ckpt_dir.glob("sac_*_steps.zip"), key=lambda p: int(p.stem.split("_")[1]))
    episodes = []
    for k, path in enumerate(tqdm(checkpoints, desc="roll out checkpoints", disable=not progress)):
        policy = SAC.load(path, device="cpu")
        episodes += rollout(policy, cfg.env_id, cfg.seed * 100_000 + k * 1000, cfg.episodes_per_checkpoint)
    everything = Trajectories.from_episodes(episodes, env_id=cfg.env_id)
    returns = everything.returns()
    lo, hi = np.quantile(returns, cfg.split)
    order = np.argsort(returns, kind="stable")
    low = everything.select(order[returns[order] < lo])
    medium = everything.select(order[(returns[order] >= lo) & (returns[order] < hi)])
    high = everything.select(order[returns[order] >= hi])
    pool = everything.select(order[returns[order] < hi])
    prefs = make_preferences(pool, cfg, np.random.default_rng(cfg.seed))
    save_trajectories(out_dir / "demos.npz", high)
    save_preferences(out_dir / "prefs.npz", prefs)
    table = quality_table(low, medium, high, prefs)
    write_json(out_dir / "quality.json", {"config": asdict(cfg), "quality": table})
    write_text(out_dir / "quality.md", format_quality(table, cfg.env_id))
    return table
