"""Speed of the exact discrete-choice lab (printed, not asserted).

1. Example 2 end to end (100 repeats: sampling, four estimators per repeat, JSON/CSV/PNG output);
   goal < 10 s.
2. One AIHF solve with N = 1000 actions and dense comparisons (every pair compared); goal < 1 s.
   Reference measured in the same run: scipy's L-BFGS-B on the same objective and analytic gradient,
   started from the same point, asked for the same 1e-9 first-order residual (gtol); both achieved
   residuals are printed.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/choice_bench.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from aihf.choice import experiments
from aihf.choice.estimators import _log_prior, _Problem, aihf_reward
from aihf.choice.sampling import sample_demonstrations, sample_preferences


def bench_example2() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        report = experiments.example2(Path(tmp), repeats=100)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(report.table())
    print(f"Example 2, 100 repeats end to end: {wall:.2f} s wall, {cpu:.2f} s CPU (goal < 10 s)\n")


def bench_large_solve(n_actions: int = 1000, per_pair: int = 2, n_demos: int = 20_000) -> None:
    rng = np.random.default_rng(0)
    reward = rng.normal(size=n_actions)
    demos = sample_demonstrations(reward, n_demos, rng)
    prefs = sample_preferences(reward, rng, per_pair=per_pair)
    print(
        f"N = {n_actions}, |D| = {n_demos} ({int((demos > 0).sum())} actions demonstrated), "
        f"|P| = {prefs.sum()} ({per_pair} per pair, every pair compared)"
    )
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        fit = aihf_reward(demos, prefs, beta=1.0)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    newton = min(walls)
    print(
        f"AIHF Newton: {newton:.3f} s wall, {min(cpus):.3f} s CPU (best of 3), {fit.iterations} iterations, "
        f"residual {fit.residual:.1e}, ridge {fit.ridge:g} (goal < 1 s)"
    )

    problem = _Problem(demos.astype(float), prefs.astype(float), _log_prior(None, n_actions), 0.0)
    start = time.perf_counter()
    result = minimize(
        lambda s: (-problem.value(s), -problem.gradient(s)),
        np.zeros(n_actions),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-9, "ftol": 0.0, "maxiter": 5000, "maxfun": 10000},
    )
    lbfgs = time.perf_counter() - start
    residual = float(np.abs(problem.gradient(result.x)).max())
    print(
        f"reference L-BFGS-B: {lbfgs:.3f} s wall, {result.nit} iterations, residual {residual:.1e} "
        f"({result.message}); time ratio L-BFGS-B / Newton = {lbfgs / newton:.1f}"
    )


if __name__ == "__main__":
    bench_example2()
    bench_large_solve()
