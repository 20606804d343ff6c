"""Seconds per IPL update on stable-baselines3 (`ipl.IPLSAC`) and on sbx (`ipl_sbx.IPLSBXSAC`), with the
data and SAC settings of protocol v2's IPL rows: Hopper-v5's shipped whole-trajectory pairs (about 1500
rows a pair, summed at every update) and `configs/control/hopper.yaml`, at 1 and 2 pairs per update.

    python benchmarks/control_ipl_cost.py [--updates 200] [--pairs 1 2] [--fill 2000]

An update is one `train(gradient_steps=1)` call, as SAC makes after each environment step: replay
sampling, IPL's critic update, the actor and the target update. Each model first fills its replay
buffer with `--fill` random-action steps and makes one untimed update (sbx's JIT compilation); the two
libraries alternate per pair count, so machine load hits both alike. torch and JAX are pinned to one
thread each (set here, before either is imported) and timed by this process's CPU time, so the figures
are seconds per update on one core even on a shared machine (wall-clock figures beside them).

Last line: `ratio=X`, sbx's seconds per update over sb3's, summed over the pair counts (below 1: sbx is
cheaper).
"""

from __future__ import annotations

import os

# before torch or JAX load: one thread each (XLA reads its flags once, at import)
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
).strip()

import argparse
import time
from pathlib import Path

import torch

from aihf.control.algorithms import make_algorithm
from aihf.control.backends import get_backend, sac_kwargs
from aihf.control.config import load_config
from aihf.control.data import load_preferences
from aihf.control.envs import make_env
from aihf.control.reward_learning import split_preferences

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "control" / "hopper.yaml"
PREFS = ROOT / "src" / "aihf" / "data" / "control" / "Hopper-v5" / "whole" / "prefs.npz"


def seconds_per_update(backend_name: str, pairs: int, updates: int, fill: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per IPL update of a fresh model with `fill` replay rows."""
    cfg = load_config(CONFIG, {"algo": "ipl", "backend": backend_name, "ipl_pref_batch_size": pairs})
    backend = get_backend(backend_name)
    sac_class = make_algorithm("ipl").sac_class(backend)
    model = backend.make(
        make_env(cfg.env_id, 0), 0, "cpu", sac_class, **{**sac_kwargs(cfg), "learning_starts": fill}
    )
    train_prefs, _ = split_preferences(load_preferences(PREFS), cfg)
    model.set_preferences(train_prefs, cfg)
    model.learn(fill)  # random actions only: no update before learning_starts
    model.train(gradient_steps=1, batch_size=cfg.batch_size)  # untimed: sbx compiles here
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    for _ in range(updates):
        model.train(gradient_steps=1, batch_size=cfg.batch_size)
    return (time.process_time() - start_cpu) / updates, (time.perf_counter() - start_wall) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200, help="timed updates per library and pair count")
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2], help="preference pairs per update")
    parser.add_argument("--fill", type=int, default=2000, help="random-action steps in the replay buffer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, {"algo": "ipl"})
    print(
        f"{cfg.env_id}, {PREFS.relative_to(ROOT)}, batch_size {cfg.batch_size}, "
        f"net {cfg.policy_kwargs['net_arch']}, {args.updates} updates each, one thread"
    )
    totals = {"sb3": 0.0, "sbx": 0.0}
    for pairs in args.pairs:
        cpu, wall = {}, {}
        for name in totals:
            cpu[name], wall[name] = seconds_per_update(name, pairs, args.updates, args.fill)
            totals[name] += cpu[name]
        print(
            f"pairs {pairs}: sb3 {cpu['sb3']:.4f} s/update, sbx {cpu['sbx']:.4f} s/update (CPU time), "
            f"sbx/sb3 {cpu['sbx'] / cpu['sb3']:.3f}; wall clock sb3 {wall['sb3']:.4f}, sbx {wall['sbx']:.4f}"
        )
    print(f"ratio={totals['sbx'] / totals['sb3']:.3f}")


if __name__ == "__main__":
    main()
