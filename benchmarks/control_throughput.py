"""Environment steps per second of three arms on the same environment, networks and budget: plain
stable-baselines3 SAC, plain sbx SAC, and the whole AIHF loop on sbx (SAC + learned reward in the env +
reward steps + replay re-scoring + evaluation + checkpoints), interleaved per repeat so that machine
load hits all alike. torch and JAX are pinned to one thread each (set here, before either is imported)
and each arm is timed by this process's CPU time, so the figures are steps per CPU-second of one core
even on a machine shared with other jobs (wall-clock figures are printed beside them):

    python benchmarks/control_throughput.py [--env Hopper-v5] [--steps 50000] [--repeats 2]

The AIHF run uses the environment's preset with 2k SAC steps per iteration and 1k random-action steps
(so most of the budget trains), evaluates one episode at the start and one at the end, and includes
sbx's one-time JIT compilation (as does the plain sbx arm, on the same networks). Every arm builds the
same SAC (`backends.sac_kwargs` of that config).

Last two lines: `overhead_ratio=X` (AIHF on sbx / plain sbx: the cost of AIHF itself; goal >= 0.9 at
50k steps) and `ratio=X` (AIHF on sbx / plain SB3 SAC; goal >= 2.0); `--arms sbx aihf` runs two arms
and prints the first only. Results: benchmarks/results/control_throughput_hopper.txt.
"""

from __future__ import annotations

import os

# before torch or JAX load: one thread each (XLA reads its flags once, at import)
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
).strip()

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

from aihf.control.backends import get_backend, sac_kwargs
from aihf.control.config import AIHFControlConfig, preset
from aihf.control.data import load_preferences, load_trajectories, shipped_data_dir
from aihf.control.envs import make_env
from aihf.control.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps per run (all arms)")
    parser.add_argument("--steps-per-iter", type=int, default=2000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=("sb3", "sbx", "aihf"),
        default=["sb3", "sbx", "aihf"],
        help="a subset prints only the ratios it allows (e.g. sbx aihf: overhead_ratio at 50k steps)",
    )
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
            "backend": "sbx",
            "n_timesteps": args.steps,
            "steps_per_iter": args.steps_per_iter,
            "learning_starts": args.learning_starts,
            "eval_episodes": 1,
            "eval_interval": args.steps,  # evaluate only at the start and the end: measure the algorithm
            "tensorboard": False,
        }
    )

    def plain(backend_name: str) -> Callable[[int], None]:
        backend = get_backend(backend_name)
        return lambda seed: backend.make(make_env(args.env, seed), seed, "cpu", **sac_kwargs(cfg)).learn(
            args.steps
        )

    def aihf(seed: int) -> None:
        with tempfile.TemporaryDirectory() as out:
            cfg.seed = seed
            train(cfg, out, demos, prefs, progress=False)

    every = {
        "sb3": ("SB3 SAC", plain("sb3")),
        "sbx": ("sbx SAC", plain("sbx")),
        "aihf": ("AIHF on sbx", aihf),
    }
    arms = dict(every[arm] for arm in every if arm in args.arms)
    for name in ("sb3", "sbx"):  # one-time imports, untimed (torch's optimisers import more on first use)
        get_backend(name).make(make_env(args.env, 0), 0, "cpu", **sac_kwargs(cfg)).learn(10)
    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    cpu, wall = dict.fromkeys(arms, 0.0), dict.fromkeys(arms, 0.0)
    for rep in range(args.repeats):
        for name, run in arms.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            run(rep)
            cpu[name] += time.process_time() - start_cpu
            wall[name] += time.perf_counter() - start_wall
        print(f"repeat {rep}: " + ", ".join(f"{name} {cpu[name] / (rep + 1):.1f} CPU-s" for name in arms))
    sps = {name: args.repeats * args.steps / s for name, s in cpu.items()}
    print(
        "wall clock: "
        + ", ".join(f"{name} {args.repeats * args.steps / s:.1f} steps/s" for name, s in wall.items())
    )
    print(
        ", ".join(f"{name}: {value:.1f} steps per CPU-s" for name, value in sps.items())
        + f" ({args.env}, {args.steps} steps, {args.repeats} repeats, net {cfg.policy_kwargs['net_arch']}, "
        f"entropy coefficient {cfg.ent_coef_label}, one thread)"
    )
    if "AIHF on sbx" in sps and "sbx SAC" in sps:
        print(f"overhead_ratio={sps['AIHF on sbx'] / sps['sbx SAC']:.3f}")
    if "AIHF on sbx" in sps and "SB3 SAC" in sps:
        print(f"ratio={sps['AIHF on sbx'] / sps['SB3 SAC']:.3f}")


if __name__ == "__main__":
    main()
