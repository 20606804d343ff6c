"""How a trained Hopper policy earns its return: episode length, distance and speed.

Hopper-v5 pays 1 per step alive plus the forward velocity (minus a small control cost), so a return near
1000 can be a hopper that stands for all 1000 steps, and one near 3000 is one that hops forward. This
rolls out every `policy.zip` under RUNS deterministically (episode seeds 10000 + the run's seed + i, as
the benchmark's evaluation; the run's seed is read from a `seedN` directory in its path) and prints, per
run, the mean true return, episode length, distance covered along x and the mean forward velocity.

    python benchmarks/control_policy_gait.py --runs RUNS [--episodes 10] [--backend auto|sb3|sbx]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np

from aihf.control.backends import get_backend


def rollouts(act, env_id: str, episodes: int, seed: int = 10000) -> dict[str, float]:
    env = gym.make(env_id)
    returns, lengths, distances = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        start = env.unwrapped.data.qpos[0]
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs.reshape(1, -1))[0])
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
        distances.append(float(env.unwrapped.data.qpos[0] - start))
    env.close()
    dt = env.unwrapped.dt
    return {
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
        "distance": float(np.mean(distances)),
        "velocity": float(np.sum(distances) / (np.sum(lengths) * dt)),
    }


def saved_backend(run_dir: Path) -> str:
    """The SAC library a run saved its policy with (its results.json; sb3 for runs from before the option)."""
    results = run_dir / "results.json"
    return json.loads(results.read_text())["config"].get("backend", "sb3") if results.is_file() else "sb3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path, help="a directory searched for policy.zip")
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "sb3", "sbx"],
        help="the SAC library the policies were saved with; auto (default): each run's own",
    )
    args = parser.parse_args()
    print("| run | true return | episode length | distance (m) | forward velocity (m/s) |")
    print("|---|---:|---:|---:|---:|")
    for path in sorted(args.runs.rglob("policy.zip")):
        backend = get_backend(saved_backend(path.parent) if args.backend == "auto" else args.backend)
        model = backend.load(path, env=None, device="cpu")
        name = path.parent.relative_to(args.runs)
        seeds = [int(part[4:]) for part in path.parts if part.startswith("seed") and part[4:].isdigit()]
        act = lambda obs, m=model, b=backend: b.act(m, obs)  # noqa: E731
        stats = rollouts(act, args.env, args.episodes, seed=10000 + (seeds[-1] if seeds else 0))
        print(
            f"| {name} | {stats['return']:.0f} | {stats['length']:.0f} | {stats['distance']:.2f} "
            f"| {stats['velocity']:.2f} |"
        )


if __name__ == "__main__":
    main()
