"""The demo_term pilot's report: each form's curve, its mean of the last three evaluations, the pick."""
import csv
import json
import shutil
import sys
from pathlib import Path

runs, dest = Path(sys.argv[1]), Path(sys.argv[2])
rows, last3 = {}, {}
for term in ("mean", "trajectory"):
    run = runs / term
    (dest / term).mkdir(parents=True, exist_ok=True)
    for name in ("curve.csv", "results.json"):
        shutil.copy(run / name, dest / term / name)
    rows[term] = list(csv.DictReader(open(run / "curve.csv")))
    last3[term] = sum(float(r["eval_return_mean"]) for r in rows[term][-3:]) / 3
res = {t: json.loads((runs / t / "results.json").read_text()) for t in rows}
pick = max(last3, key=last3.get)
lines = [
    "| demo_term | mean of the last three evaluations (260k, 280k, 300k) | final evaluation | wall time (s) |",
    "| --- | ---: | ---: | ---: |",
]
for t in rows:
    lines.append(f"| {t} | {last3[t]:.1f} | {res[t]['eval_return_mean']:.1f} +- {res[t]['eval_return_std']:.1f} | {res[t]['wall_time_s']:.0f} |")
lines += ["", "| step | " + " | ".join(rows) + " |", "| ---: | " + " | ".join("---:" for _ in rows) + " |"]
for i, r in enumerate(rows["mean"]):
    lines.append(f"| {r['step']} | " + " | ".join(f"{float(rows[t][i]['eval_return_mean']):.1f}" for t in rows) + " |")
print("\n".join(lines))
print(f"\npick={pick}")
