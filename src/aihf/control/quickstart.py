"""Control quick run for `aihf quickstart`: AIHF vs RLHF and BC on Pendulum-v1 beside the oracle (SAC on
the true reward), two seeds, with the demonstrations and preferences shipped in the package.

The budget is one where the oracle learns: with the JAX SAC (sbx) and automatic entropy tuning it
reached -150 and -225 (mean of the last three evaluations, seeds 1 and 0) within 6000 steps in the
pilot, so a method far below it at 6000 steps did not learn in this budget; the task was in reach.
`aihf control bench` adds the other baselines and more seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aihf.control.algorithms import ALGORITHM_LABELS
from aihf.control.bench import run_bench
from aihf.control.data import shipped_data_dir

ENV = "Pendulum-v1"
ALGOS = ["sac-true", "aihf", "rlhf", "bc"]
SEEDS = [0, 1]
TOTAL_STEPS = 6000
SETTINGS = {"backend": "sbx", "ent_coef": "auto"}


def run(out_dir: Path) -> str:
    sub = Path(out_dir) / "control"
    table = run_bench(ENV, ALGOS, SEEDS, sub, total_steps=TOTAL_STEPS, overrides=SETTINGS)
    quality = (shipped_data_dir(ENV) / "quality.md").read_text()
    algos = json.loads((sub / "results.json").read_text())["algos"]
    return (
        "AIHF learns the reward jointly with SAC from the shipped demonstrations (the best third of the "
        "expert's checkpoint rollouts) and preferences (pairs from the worse two thirds); RLHF fits the "
        "reward on the preferences alone, starting SAC from a behaviour-cloned actor; the oracle is SAC "
        f"on the true reward. {len(SEEDS)} seeds, {TOTAL_STEPS} SAC steps each (JAX SAC, automatic "
        "entropy tuning); the paper's runs are about 1M steps on MuJoCo.\n\n"
        f"Shipped data quality (true return):\n\n{quality}\n{table}\n"
        f"![true return vs SAC steps](control/curves.png)\n\n"
        f"**Verdict.** {verdict(algos)}\n\n"
        f"Reproduce: `aihf control bench --env {ENV} --algos {' '.join(ALGOS)} --seeds "
        f"{' '.join(map(str, SEEDS))} --total-steps {TOTAL_STEPS} --out runs/pendulum` "
        "with `backend: sbx` and `ent_coef: auto` in a `--config` YAML.\n"
    )


def verdict(algos: dict[str, Any]) -> str:
    """One paragraph on what the table shows: AIHF against RLHF seed by seed (means of the last three
    evaluations, less noisy than the final one), against the oracle, and what two seeds cannot show."""

    def last3(algo: str) -> list[float]:
        return [run["last3_return"] for run in algos[algo]["per_seed"]]

    aihf, rlhf, oracle = last3("aihf"), last3("rlhf"), last3("sac-true")
    wins = sum(a > r for a, r in zip(aihf, rlhf))
    mean = {algo: sum(v) / len(v) for algo, v in (("aihf", aihf), ("rlhf", rlhf), ("sac-true", oracle))}
    better = "above" if mean["aihf"] > mean["rlhf"] else "at or below"
    gap = mean["sac-true"] - mean["aihf"]
    return (
        f"Over the last three evaluations, AIHF ({mean['aihf']:.0f}) is {better} RLHF "
        f"({mean['rlhf']:.0f}) on average and ahead in {wins} of {len(aihf)} seeds; "
        f"{ALGORITHM_LABELS['sac-true']} reaches {mean['sac-true']:.0f}, "
        + (f"{gap:.0f} above AIHF. " if gap > 0 else f"{-gap:.0f} below AIHF. ")
        + f"With {len(aihf)} seeds and one short budget this shows the direction on this task only, "
        "not a significant difference, and says nothing about MuJoCo at the paper's scale."
    )
