"""Gold v2's headroom: its spread on SmolLM2's own samples, on the shipped data and on the table of texts.

    OMP_NUM_THREADS=1 python benchmarks/gold_v2_headroom.py --out RUNS/gold_v2_headroom \
        --records docs/results/lm/smollm2/records
    OMP_NUM_THREADS=1 python benchmarks/gold_v2_headroom.py --out RUNS/gold_v2_headroom_v2 \
        --data smollm2_v2 --gold-rl WORK/gold_rl_v2   # the v2 data and its gold-RL checkpoints

1. The base policy (SmolLM2-135M-Instruct) sampled on the benchmark's 128 test prompts exactly as the
   benchmark draws its reference samples (`evaluation.reference_samples`: the smollm2 preset's sampling
   settings, seed `REFERENCE_SEED`), so these are the samples every v1 win rate was measured against.
2. The demonstrations, preferred and non-preferred completions shipped in `aihf/data/lm/smollm2/`
   (made on the v1 gold): does the paper's Table-3 ordering demonstrations > preferred > non-preferred
   hold under v2?
3. The table of hand-written texts (`aihf/data/lm/gold_v2/table.jsonl`), per kind.
4. With `--records`: the samples of the finished seed-0 headline jobs of the v1 benchmark, a cheap view of
   what policies optimised on v1 data look like under v2 (not a gold-RL policy).
5. With `--gold-rl`: every checkpoint of a gold-RL run (`aihf lm generate-data --work-dir`) sampled like
   the base policy: what optimising the gold itself reaches, and what its over-optimisation looks like.

`--data` names the data directory under `aihf/data/lm/` (default `smollm2`, the v1 data; `smollm2_v2` for
the data made on gold v2, whose test prompts start the assistant's turn with the text).

Writes OUT/scores.json (every text with its factors) and OUT/summary.md (mean, std, min, median, max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aihf
from aihf.lm import gold_v2
from aihf.lm.gold import gold_spec

DATA = Path(aihf.__file__).parent / "data" / "lm"
RECORD_METHODS = ("sft", "rlhf", "aihf", "dpo", "direct-aihf")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_samples(
    model_dir: Path, n: int, data: str = "smollm2", checkpoints: list[Path] | None = None
) -> list[dict[str, Any]]:
    """The benchmark's reference samples of the base policy on its first `n` test prompts, and the same
    draws (prompts, settings, seed) from each gold-RL checkpoint in `checkpoints`."""
    from aihf.lm.bench.bench import PROTOCOL_DIR, read_bench_protocol
    from aihf.lm.bench.datagen import load_checkpoint
    from aihf.lm.evaluation import REFERENCE_SEED, load_model, sample

    prompts = [row["prompt"] for row in _jsonl(DATA / data / "test_prompts.jsonl")][:n]
    protocol = "lm_smollm2_v2.yaml" if data == "smollm2_v2" else "lm_smollm2.yaml"
    sampling = read_bench_protocol(PROTOCOL_DIR / protocol, False, model_dir).sampling
    policies = [("base policy", lambda: load_model(model_dir))]
    policies += [(f"gold RL {c.name}", lambda c=c: load_checkpoint(c, model_dir)) for c in checkpoints or []]
    rows = []
    for name, load in policies:
        model, tokenizer = load()
        drawn = sample(model, tokenizer, prompts, sampling, seed=REFERENCE_SEED)
        rows += [{"set": name, "prompt": p, "completion": c} for p, c in zip(prompts, drawn.completions)]
    return rows


def data_rows(data: str = "smollm2") -> list[dict[str, Any]]:
    rows = [
        {"set": "demonstrations", "prompt": r["prompt"], "completion": r["completion"]}
        for r in _jsonl(DATA / data / "demos.jsonl")
    ]
    prefs = _jsonl(DATA / data / "prefs.jsonl")
    for column, name in (("chosen", "preferred"), ("rejected", "non-preferred")):
        rows += [{"set": name, "prompt": r["prompt"], "completion": r[column]} for r in prefs]
    return rows


def record_rows(records: Path) -> list[dict[str, Any]]:
    rows = []
    for method in RECORD_METHODS:
        path = records / f"{method}_d500_p1000_k1_s0.json"
        if path.is_file():
            rows += [
                {
                    "set": f"v1 {method} seed 0",
                    "prompt": s["prompt"],
                    "completion": s["completion"],
                    "v1": s["gold"],
                }
                for s in json.loads(path.read_text())["samples"]
            ]
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row["set"], []).append(row["score"])
    lines = [
        "| set | n | mean | std | min | median | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, scores in groups.items():
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        lines.append(
            f"| {name} | {len(scores)} | {statistics.mean(scores):.3f} | {std:.3f} | {min(scores):.3f} "
            f"| {statistics.median(scores):.3f} | {max(scores):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--records", type=Path, help="v1 benchmark records (docs/results/lm/smollm2/records)")
    parser.add_argument("--data", default="smollm2", help="data directory under aihf/data/lm/")
    parser.add_argument("--gold-rl", type=Path, help="a gold-RL work directory: sample its checkpoints too")
    parser.add_argument("--gold-rl-every", type=int, default=30, help="checkpoints at multiples of this step")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    gold = gold_v2.load()
    start = time.perf_counter()
    checkpoints = None
    if args.gold_rl:
        from aihf.lm.bench.datagen import saved_checkpoints

        every = args.gold_rl_every
        checkpoints = [c for c in saved_checkpoints(args.gold_rl) if int(c.name.split("-")[1]) % every == 0]
    rows = base_samples(gold.lm.model_dir, args.n_test, args.data, checkpoints)
    print(f"sampled {len(rows)} in {time.perf_counter() - start:.0f} s", flush=True)
    rows += data_rows(args.data)
    rows += [{"set": f"table: {r['kind']}", **r} for r in _jsonl(DATA / "gold_v2" / "table.jsonl")]
    if args.records:
        rows += record_rows(args.records)
    start = time.perf_counter()
    parts = gold.components([r["prompt"] for r in rows], [r["completion"] for r in rows])
    print(f"scored {len(rows)} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = [row | part for row, part in zip(rows, parts)]
    (args.out / "scores.json").write_text(json.dumps({"gold": gold_spec(gold), "rows": rows}, indent=1))
    (args.out / "summary.md").write_text(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
