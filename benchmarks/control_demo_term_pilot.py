"""The Hopper protocol v2 demo_term pilot's report: each form's curve, its mean of the last three
evaluations (the protocol's rule) and the pick; copies each run's curve.csv and results.json to DEST.

    python benchmarks/control_demo_term_pilot.py RUNS/pilot-demo-term \
        benchmarks/results/control_hopper_v2_pilot_demo_term
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

TERMS = ("mean", "trajectory")


def main(runs: Path, dest: Path) -> None:
    curves, last3, results = {}, {}, {}
    for term in TERMS:
        (dest / term).mkdir(parents=True, exist_ok=True)
        for name in ("curve.csv", "results.json"):
            shutil.copy(runs / term / name, dest / term / name)
        with open(runs / term / "curve.csv", newline="") as fh:
            curves[term] = [float(row["eval_return_mean"]) for row in csv.DictReader(fh)]
        last3[term] = sum(curves[term][-3:]) / 3
        results[term] = json.loads((runs / term / "results.json").read_text())
    with open(runs / TERMS[0] / "curve.csv", newline="") as fh:
        steps = [row["step"] for row in csv.DictReader(fh)]
    lines = [
        "| demo_term | mean of the last three evaluations | final evaluation | wall time (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for term in TERMS:
        r = results[term]
        final = f"{r['eval_return_mean']:.1f} +- {r['eval_return_std']:.1f}"
        lines.append(f"| {term} | {last3[term]:.1f} | {final} | {r['wall_time_s']:.0f} |")
    lines += ["", "| step | " + " | ".join(TERMS) + " |", "| ---: |" + " ---: |" * len(TERMS)]
    for i, step in enumerate(steps):
        lines.append(f"| {step} | " + " | ".join(f"{curves[t][i]:.1f}" for t in TERMS) + " |")
    print("\n".join(lines))
    print(f"\npick={max(last3, key=last3.__getitem__)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
