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

`build_pairs` (`aihf control pairs`) redraws the preferences of a collected pool as whole-trajectory
pairs whose sides sit at the paper's gaps (Table 1: non-preferred about 66 %, preferred about 85 % of
the demonstrations' mean return), so that falls are inside the compared data: 50-step segments of a
pool whose falls happen late (v1) never contained one.
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
from stable_baselines3.common.logger import Logger
from tqdm.auto import tqdm

from aihf.control.backends import get_backend
from aihf.control.config import parse_ent_coef
from aihf.control.data import (
    Preferences,
    Trajectories,
    load_trajectories,
    save_preferences,
    save_trajectories,
)
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
    model.set_logger(Logger(None, []))  # else SB3 makes an empty /tmp/SB3-<time> directory
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


# ---------------------------------------------------------------------------------------------------
# whole-trajectory pairs at the paper's gaps

PAPER_GAPS = (0.66, 0.85)  # Hopper 2345 / 3025 of 3560; HalfCheetah 7226 / 9434 of 11635 (v1 Table 1)


def falls(traj: Trajectories) -> np.ndarray:
    """Per trajectory: did the environment end it (terminated at its last step, e.g. the robot fell)."""
    return traj.terminated[np.cumsum(traj.lengths) - 1].astype(bool)


def pair_window(
    returns: np.ndarray, demo_return: float, targets: tuple[float, float], min_pool: int
) -> tuple:
    """The pool to pair up: the contiguous window (in return order, at least `min_pool` trajectories) whose
    pairs, all distinct ones labelled by return, have side means closest to `targets` x `demo_return`
    (non-preferred, preferred). Returns (indices into `returns`, non-preferred mean, preferred mean).

    Of k values sorted ascending, the t-th is the larger side of t pairs and the smaller of k-1-t, so
    each window's side means come from prefix sums, for every window at once."""
    order = np.argsort(returns, kind="stable")
    v = returns[order].astype(np.float64)
    n = len(v)
    p0 = np.concatenate([[0.0], np.cumsum(v)])
    p1 = np.concatenate([[0.0], np.cumsum(v * np.arange(n))])
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    k = j - i
    valid = k >= max(min_pool, 2)
    pairs = np.where(valid, k * (k - 1) / 2, 1.0)
    total = p0[j] - p0[i]
    high_sum = (p1[j] - p1[i]) - i * total  # sum over the window of v_t * (its rank t in the window)
    preferred = high_sum / pairs
    non_preferred = ((k - 1) * total - high_sum) / pairs
    miss = (non_preferred / demo_return - targets[0]) ** 2 + (preferred / demo_return - targets[1]) ** 2
    best = np.unravel_index(np.argmin(np.where(valid, miss, np.inf)), miss.shape)
    lo, hi = int(best[0]), int(best[1])
    return np.sort(order[lo:hi]), float(non_preferred[lo, hi]), float(preferred[lo, hi])


def whole_trajectory_preferences(pool: Trajectories, num_pairs: int, rng: np.random.Generator) -> Preferences:
    """`num_pairs` distinct pairs of whole pool trajectories (all of them when 0 or more than exist), each
    side order random, labelled by true return (0.5 on a tie)."""
    a, b = np.triu_indices(len(pool), k=1)
    chosen = rng.permutation(len(a))
    if 0 < num_pairs < len(a):
        chosen = np.sort(chosen[:num_pairs])
    a, b = a[chosen], b[chosen]
    swap = rng.random(len(a)) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    lengths, returns = pool.lengths, pool.returns()
    segments = np.stack([a, np.zeros_like(a), lengths[a], b, np.zeros_like(b), lengths[b]], axis=1)
    labels = np.where(returns[a] > returns[b], 1.0, np.where(returns[a] < returns[b], 0.0, 0.5))
    return Preferences(pool, segments.astype(np.int64), labels.astype(np.float32))


def table1(prefs: Preferences, demos: Trajectories) -> dict:
    """The paper's Table 1 for whole-trajectory pairs: each set's true return (mean, std, share of the
    demonstrations' mean), how many of its trajectories fall, and n; plus how often a pair has a fall on
    exactly one side and how often the preferred side is one that fell."""
    pool = prefs.trajectories
    returns, fell = pool.returns(), falls(pool)
    a, b = prefs.segments[:, 0], prefs.segments[:, 3]
    a_wins = prefs.labels >= 0.5
    winner, loser = np.where(a_wins, a, b), np.where(a_wins, b, a)
    demo_mean = float(np.mean(demos.returns()))

    def row(values: np.ndarray, fallen: np.ndarray) -> dict:
        return {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "of_demonstrations": float(np.mean(values) / demo_mean),
            "fall_rate": float(np.mean(fallen)),
            "n": len(values),
        }

    return {
        "env_id": pool.env_id,
        "sets": {
            "pool (both sides)": row(returns, fell),
            "non-preferred": row(returns[loser], fell[loser]),
            "preferred": row(returns[winner], fell[winner]),
            "demonstrations": row(demos.returns(), falls(demos)),
        },
        "pairs": len(prefs),
        "pairs_with_one_fall": float(np.mean(fell[a] != fell[b])),
        "preferred_side_fell": float(np.mean(fell[winner])),
        "transitions": int(pool.num_transitions),
    }


def format_table1(table: dict) -> str:
    lines = [
        f"| {table['env_id']} set (whole trajectories) | n | true return (mean +- std) "
        "| of demonstrations | falls |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {r['n']} | {r['mean']:.1f} +- {r['std']:.1f} | {r['of_demonstrations']:.0%} | "
        f"{r['fall_rate']:.0%} |"
        for name, r in table["sets"].items()
    ]
    lines.append(
        f"\n{table['pairs']} pairs over {table['sets']['pool (both sides)']['n']} trajectories "
        f"({table['transitions']} transitions); a fall on exactly one side in "
        f"{table['pairs_with_one_fall']:.0%} of the pairs; the preferred side fell in "
        f"{table['preferred_side_fell']:.0%}."
    )
    return "\n".join(lines) + "\n"


def build_pairs(
    pools: list[str | Path],
    demos_path: str | Path,
    out_dir: str | Path,
    num_pairs: int = 0,
    targets: tuple[float, float] = PAPER_GAPS,
    min_pool: int = 20,
    seed: int = 0,
) -> dict:
    """Whole-trajectory preferences from the trajectories of `pools` (trajectory or preference files, e.g.
    a collected prefs.npz, whose pool is every rolled-out trajectory below the demonstrations), drawn
    from the window of `pair_window`. Writes demos.npz (the demonstrations, so the directory is whole),
    prefs.npz and table1.{json,md}; returns the table."""
    if len(targets) != 2 or not 0 < targets[0] < targets[1]:
        raise InputError(f"--targets {targets}: expected two increasing positive fractions")
    if num_pairs < 0:
        raise InputError(f"--num-preferences {num_pairs}: expected 0 (every pair) or a positive count")
    if min_pool < 2:
        raise InputError(f"--min-pool {min_pool}: expected at least 2")
    written = {(Path(out_dir) / name).resolve() for name in ("demos.npz", "prefs.npz")}
    for path in [demos_path, *pools]:
        if Path(path).resolve() in written:
            raise InputError(f"{path}: --out {out_dir} would overwrite this input; write elsewhere")
    demos = load_trajectories(demos_path)
    loaded = [load_trajectories(path) for path in pools]
    for path, traj in zip(pools, loaded):
        if traj.env_id != demos.env_id:
            raise InputError(f"{path}: env_id {traj.env_id!r}, the demonstrations' is {demos.env_id!r}")
        if traj.observations.shape[1] != demos.observations.shape[1]:
            raise InputError(
                f"{path}: observations of size {traj.observations.shape[1]}, the demonstrations' "
                f"are {demos.observations.shape[1]}"
            )
    for path, traj in [(demos_path, demos), *zip(pools, loaded)]:
        if np.isnan(traj.rewards).any():  # human data: no true reward to label or bucket by
            raise InputError(f"{path}: rewards are unknown (NaN); pairs are labelled by true return")
    everything = loaded[0] if len(loaded) == 1 else _concatenate(loaded)
    if min_pool > len(everything):
        raise InputError(f"--min-pool {min_pool}: the pool has only {len(everything)} trajectories")
    demo_return = float(np.mean(demos.returns()))
    window, _, _ = pair_window(everything.returns(), demo_return, targets, min_pool)
    prefs = whole_trajectory_preferences(everything.select(window), num_pairs, np.random.default_rng(seed))
    out_dir = Path(out_dir)
    save_trajectories(out_dir / "demos.npz", demos)
    save_preferences(out_dir / "prefs.npz", prefs)
    table = table1(prefs, demos)
    settings = {
        "pools": [str(p) for p in pools],
        "demos": str(demos_path),
        "num_pairs": num_pairs,
        "targets": list(targets),
        "min_pool": min_pool,
        "seed": seed,
    }
    write_json(out_dir / "table1.json", {"settings": settings, "table1": table})
    write_text(out_dir / "table1.md", format_table1(table))
    return table


def _concatenate(sets: list[Trajectories]) -> Trajectories:
    with_next = all(t.next_observations is not None for t in sets)
    return Trajectories(
        *(
            np.concatenate([getattr(t, key) for t in sets])
            for key in ("observations", "actions", "rewards", "terminated", "truncated", "lengths")
        ),
        sets[0].env_id,
        np.concatenate([t.next_observations for t in sets]) if with_next else None,
    )
