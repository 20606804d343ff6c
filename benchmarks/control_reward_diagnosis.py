"""Where a learned Hopper reward is negative: the diagnosis behind the collapsed tuning runs.

With `termination: env` a fall ends the episode and everything after it is worth 0, so a policy whose
learned reward is negative where it stands (the start states) does best by falling at once. This
prints, for every saved reward net under RUNS, its mean reward per step on the demonstrations, on the
whole preference data, the share of preference-data transitions it scores below 0, and its mean on
the trajectories' first transitions (the start states every episode passes through).

    python benchmarks/control_reward_diagnosis.py --runs RUNS [--data DIR_WITH_DEMOS_AND_PREFS]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from aihf.control.data import load_preferences, load_trajectories, shipped_data_dir
from aihf.control.reward import RewardNet

DATA = shipped_data_dir("Hopper-v5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path, help="a directory searched for reward_net/")
    parser.add_argument("--data", default=DATA, type=Path, help="directory with demos.npz and prefs.npz")
    args = parser.parse_args()
    demos = load_trajectories(args.data / "demos.npz")
    prefs = load_preferences(args.data / "prefs.npz").trajectories
    print("| run | demonstrations | preference data | share < 0 | start states |")
    print("|---|---:|---:|---:|---:|")
    for path in sorted(args.runs.rglob("reward_net")):
        net = RewardNet.from_pretrained(path)
        on_demos = net.predict(demos.observations, demos.actions)
        on_prefs = net.predict(prefs.observations, prefs.actions)
        name = path.parent.relative_to(args.runs)
        print(
            f"| {name} | {on_demos.mean():+.3f} | {on_prefs.mean():+.3f} | {np.mean(on_prefs < 0):.2f} "
            f"| {on_prefs[prefs.starts].mean():+.3f} |"
        )


if __name__ == "__main__":
    main()
