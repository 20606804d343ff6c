"""Environment steps per second of the whole AIHF loop (SAC + learned reward in the env + reward steps +
replay re-scoring + evaluation + checkpoints) on the chosen backend, divided by plain stable-baselines3
SAC on the same environment, network sizes and budget, measured in this run (interleaved repeats, so
machine load hits both alike). Run it single-threaded for a per-core figure:

    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/control_throughput.py [--env Hopper-v5] [--backend sbx] [--steps 20000]

The AIHF run uses the environment's preset with 2k SAC steps per iteration and 1k random-action steps
(so most of the budget trains), and includes sbx's one-time JIT compilation of each new model (about
9 s per run here). The default 20k steps keep that fixed cost to a share closer to real runs (100k to
1M steps); at 10k steps it pulled the ratio from 2.105 to 1.929 on this machine (2026-11-23).

Last line: ratio=<float> (goal on Hopper-v5 with sbx: >= 2.0).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from aihf.control.backends import get_backend, sac_kwargs
from aihf.control.config import AIHFControlConfig, preset
from aihf.control.data import load_preferences, load_trajectories, shipped_data_dir
from aihf.control.envs import make_env
from aihf.control.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--backend", default="sbx", help="the AIHF loop's SAC backend (baseline: sb3)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--steps-per-iter", type=int, default=2000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = shipped_data_dir(args.env)
    if shipped is None:
        raise SystemExit(f"no shipped data for {args.env}")
    demos, prefs = load_trajectories(shipped / "demos.npz"), load_preferences(shipped / "prefs.npz")
    cfg = AIHFControlConfig(
        **{
            **preset(args.env),  # the same settings `aihf control train` uses for this environment
            "env_id": args.env,
            "algo": "aihf",
            "backend": args.backend,
            "total_steps": args.steps,
            "steps_per_iter": args.steps_per_iter,
            "learning_starts": args.learning_starts,
            "eval_episodes": 1,
            "eval_interval": args.steps,  # evaluate only at the start and the end: measure the algorithm
            "tensorboard": False,
        }
    )
    plain = get_backend("sb3")
    plain.make(make_env(args.env, 0), 0, "cpu", **sac_kwargs(cfg)).learn(10)  # one-time imports untimed
    sac_time = aihf_time = 0.0
    for rep in range(args.repeats):
        model = plain.make(make_env(args.env, rep), rep, "cpu", **sac_kwargs(cfg))
        start = time.perf_counter()
        model.learn(args.steps)
        sac_time += time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            cfg.seed = rep
            start = time.perf_counter()
            train(cfg, out, demos, prefs, progress=False)
            aihf_time += time.perf_counter() - start
        runs = rep + 1
        print(
            f"repeat {rep}: plain SB3 SAC {sac_time / runs:.1f} s, AIHF loop {aihf_time / runs:.1f} s per run"
        )
    sac_sps = args.repeats * args.steps / sac_time
    aihf_sps = args.repeats * args.steps / aihf_time
    print(
        f"plain SB3 SAC: {sac_sps:.1f} steps/s; AIHF loop on {args.backend}: {aihf_sps:.1f} steps/s "
        f"({args.env}, {args.steps} steps, {args.repeats} repeats, net {list(cfg.sac_hidden)}, "
        f"entropy coefficient {cfg.ent_coef_label})"
    )
    print(f"ratio={aihf_sps / sac_sps:.3f}")


if __name__ == "__main__":
    main()
