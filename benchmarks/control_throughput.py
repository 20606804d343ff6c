"""Environment steps per second of the whole AIHF loop (SAC + learned reward in the env + reward steps +
replay re-scoring + evaluation + checkpoints) divided by plain SB3 SAC on the same environment, network
sizes and budget, measured in this run (interleaved repeats, so machine load hits both alike).

    python benchmarks/control_throughput.py [--env Pendulum-v1] [--steps 3000] [--repeats 2]

The AIHF run uses the environment's preset (Pendulum-v1: 500 SAC steps per iteration, 20 reward updates
per iteration, a checkpoint every iteration).

Last line: ratio=<float> (target >= 0.8).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from stable_baselines3 import SAC

from aihf.control.config import AIHFControlConfig, preset
from aihf.control.data import load_preferences, load_trajectories, shipped_data_dir
from aihf.control.train import make_env, train


def _sac(env_id: str, cfg: AIHFControlConfig, seed: int) -> SAC:
    """Plain SB3 SAC with the settings the AIHF loop uses."""
    return SAC(
        "MlpPolicy",
        make_env(env_id, seed),
        learning_rate=cfg.sac_lr,
        buffer_size=cfg.total_steps,
        learning_starts=cfg.learning_starts,
        batch_size=cfg.sac_batch_size,
        gamma=cfg.gamma,
        policy_kwargs={"net_arch": list(cfg.sac_hidden)},
        seed=seed,
        device="cpu",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--steps-per-iter", type=int, default=None, help="default: the preset's")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = shipped_data_dir(args.env)
    if shipped is None:
        raise SystemExit(f"no shipped data for {args.env}")
    demos, prefs = load_trajectories(shipped / "demos.npz"), load_preferences(shipped / "prefs.npz")
    values = {
        **preset(args.env),  # the same settings `aihf control train` uses for this environment
        "env_id": args.env,
        "algo": "aihf",
        "total_steps": args.steps,
        "eval_episodes": 1,
        "eval_interval": args.steps,  # evaluate only at the start and the end: measure the algorithm
        "tensorboard": False,
    }
    if args.steps_per_iter:
        values["steps_per_iter"] = args.steps_per_iter
    cfg = AIHFControlConfig(**values)
    _sac(args.env, cfg, seed=0).learn(10)  # warm-up: one-time imports (torch optimisers, dynamo) untimed
    sac_time = aihf_time = 0.0
    for rep in range(args.repeats):
        model = _sac(args.env, cfg, seed=rep)
        start = time.perf_counter()
        model.learn(args.steps)
        sac_time += time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            cfg.seed = rep
            start = time.perf_counter()
            train(cfg, out, demos, prefs, progress=False)
            aihf_time += time.perf_counter() - start
        print(
            f"repeat {rep}: SAC {sac_time / (rep + 1):.1f} s, AIHF loop {aihf_time / (rep + 1):.1f} s per run"
        )
    sac_sps = args.repeats * args.steps / sac_time
    aihf_sps = args.repeats * args.steps / aihf_time
    print(
        f"plain SAC: {sac_sps:.1f} steps/s; AIHF loop: {aihf_sps:.1f} steps/s "
        f"({args.env}, {args.steps} steps, {args.repeats} repeats)"
    )
    print(f"ratio={aihf_sps / sac_sps:.3f}")


if __name__ == "__main__":
    main()
