"""Control quick run for `aihf quickstart`: AIHF vs RLHF (and BC) on Pendulum-v1, with the demonstrations
and preferences shipped in the package; about two minutes on 2 free CPU cores. (`aihf control bench`
adds the other baselines, the SAC oracle and more seeds.)"""

from __future__ import annotations

from pathlib import Path

from aihf.control.bench import run_bench
from aihf.control.data import shipped_data_dir

ENV = "Pendulum-v1"
ALGOS = ["aihf", "rlhf", "bc"]
TOTAL_STEPS = 4000


def run(out_dir: Path) -> str:
    sub = Path(out_dir) / "control"
    table = run_bench(ENV, ALGOS, [0], sub, total_steps=TOTAL_STEPS, progress=False)
    quality = (shipped_data_dir(ENV) / "quality.md").read_text()
    return (
        "AIHF learns the reward jointly with SAC from the shipped demonstrations (the best third of the "
        "expert's checkpoint rollouts) and preferences (pairs from the worse two thirds); RLHF fits the "
        "reward on the preferences alone, starting SAC from a behaviour-cloned actor. "
        f"One seed, {TOTAL_STEPS} SAC steps (the paper's runs are about 1M steps on MuJoCo; "
        "`aihf control bench` runs more seeds).\n\n"
        f"Shipped data quality (true return):\n\n{quality}\n{table}\n"
        f"![true return vs SAC steps](control/curves.png)\n\n"
        f"Reproduce one run: `aihf control train --env {ENV} --algo aihf --total-steps {TOTAL_STEPS} "
        f"--seed 0 --out runs/aihf`.\n"
    )
