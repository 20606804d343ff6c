"""The LM benchmark: every method trained on the same generated data, evaluated under the gold reward.

Pairs compared, as in the paper: AIHF vs RLHF, Direct AIHF vs DPO, Self-Play AIHF vs SPIN, with IPO
and SFT as references. Each run goes through `aihf.lm.train.run_training`, then `aihf.lm.evaluation`
scores its policy on the test prompts (gold reward, KL to the base model, win rate against it) and,
for methods that learn a reward (AIHF, RLHF), that reward's accuracy on held-out preferences and its
correlation with the gold reward on the policy's own samples (the paper's Fig. 8).

`quick=True` is the main job's version (one seed, short runs, a small test set, at most ~10 minutes on
2 CPU cores); the full version adds seeds and a data-size sweep. Output: report.md, results.json and
PNG plots in the output directory.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aihf.errors import InputError
from aihf.io import write_json, write_text
from aihf.lm.bench.corpus import load_prompts
from aihf.lm.bench.datagen import GENERATED_DIR
from aihf.lm.bench.pretrain import BASE_MODEL_DIR
from aihf.lm.evaluation import SamplingConfig, evaluate, load_model, reference_samples
from aihf.lm.gold import gold_name, load_gold_reward

# Settings shared by every trainer: a small model trains at larger learning rates than the 1e-5 default.
COMMON = {"max_length": 64, "max_prompt_length": 16, "tensorboard": False, "cpu": True, "logging_steps": 10}
RL = {"max_new_tokens": 24, "num_samples": 4, "prompt_batch_size": 8, "beta": 0.05, "learning_rate": 1e-4}
RL |= {"policy_learning_rate": 5e-4, "reward_learning_rate": 3e-4}

# method -> (trainer, data it is given, config, how its length scales with the budget)
METHODS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "aihf": ("aihf", ("demos", "prefs", "prompts"), RL | {"batch_size": 16}),
    "rlhf": ("rlhf", ("prefs", "prompts"), RL | {"batch_size": 16}),
    # AIHF whose reward starts from the same Bradley-Terry warm-up as RLHF's reward stage (see WARM_START).
    "aihf-warm": ("aihf", ("demos", "prefs", "prompts"), RL | {"batch_size": 16}),
    "direct-aihf": (
        "direct-aihf",
        ("demos", "prefs"),
        {"learning_rate": 1e-4, "batch_size": 16, "beta": 0.1},
    ),
    "dpo": ("dpo", ("prefs",), {"learning_rate": 1e-4, "batch_size": 16, "beta": 0.1}),
    "ipo": ("ipo", ("prefs",), {"learning_rate": 1e-4, "batch_size": 16, "beta": 0.1}),
    "self-play-aihf": ("self-play-aihf", ("demos", "prefs"), {"learning_rate": 1e-4, "batch_size": 16}),
    "spin": ("spin", ("demos",), {"learning_rate": 1e-4, "batch_size": 16}),
    "sft": ("sft", ("demos",), {"learning_rate": 1e-4, "batch_size": 16}),
}
# Methods whose reward model is first fitted to the preferences (TRL RewardTrainer, `rlhf_reward_steps`
# steps): plain AIHF starts its reward from a fresh head, so its first policy steps chase an untrained
# reward, while RLHF's reward stage gives it a trained one; this variant separates the two effects.
WARM_START = {"aihf-warm"}
PAIRS = (("aihf", "rlhf"), ("aihf-warm", "rlhf"), ("direct-aihf", "dpo"), ("self-play-aihf", "spin"))


@dataclass
class BenchConfig:
    quick: bool = True
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    n_demos: int = 1000
    n_prefs: int = 1000
    sizes: list[int] = field(default_factory=list)  # data-size sweep (demos = prefs = n), main size excluded
    sweep_methods: list[str] = field(default_factory=lambda: ["aihf", "rlhf", "direct-aihf", "dpo"])
    sweep_seeds: list[int] | None = None  # default: `seeds`
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> trainer config keys
    n_test: int = 200
    steps: int = 60  # optimiser steps of the one-stage methods
    iterations: int = 30  # AIHF / RLHF iterations (one policy and one reward step each)
    rlhf_reward_steps: int = 60  # RLHF's reward-model stage
    spin_iterations: int = 2
    gold: str = "vader"
    base_model: str = str(BASE_MODEL_DIR)
    data_dir: str = str(GENERATED_DIR)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            quick=False,
            seeds=[0, 1, 2],
            sizes=[250, 500],
            n_test=1024,
            steps=200,
            iterations=100,
            rlhf_reward_steps=200,
            spin_iterations=3,
        )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: missing (generate it with `aihf lm generate-data`)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def method_config(method: str, cfg: BenchConfig, seed: int) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    trainer, needs, values = METHODS[method]
    values = COMMON | values | {"seed": seed}
    if trainer in ("aihf", "rlhf"):
        values |= {"max_iterations": cfg.iterations}
        if trainer == "rlhf":
            values["reward_warmup_steps"] = cfg.rlhf_reward_steps
    elif trainer in ("self-play-aihf", "spin"):
        values |= {
            "max_iterations": cfg.spin_iterations,
            "steps_per_iteration": max(1, cfg.steps // cfg.spin_iterations),
            "max_new_tokens": cfg.sampling.max_new_tokens,
        }
    else:
        values |= {"max_steps": cfg.steps}
    return trainer, needs, values | cfg.overrides.get(method, {})


def init_reward_model(base_model: str, out: Path) -> Path:
    """A one-logit reward model whose body is the base policy's (the paper starts rewards from the SFT
    model); its head is freshly initialised."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (out / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def run_bench(out_dir: str | Path, cfg: BenchConfig | None = None) -> dict[str, Any]:
    """Train and evaluate every (method, data size, seed); write report.md, results.json and plots."""
    import torch

    from aihf.lm.train import run_training

    cfg = cfg or BenchConfig()
    cfg.data_dir, cfg.base_model = str(cfg.data_dir), str(cfg.base_model)
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise InputError(f"unknown methods {unknown}: expected some of {', '.join(METHODS)}")
    out, data_dir = Path(out_dir), Path(cfg.data_dir)
    start = time.perf_counter()
    demos, prefs = _read_jsonl(data_dir / "demos.jsonl"), _read_jsonl(data_dir / "prefs.jsonl")
    heldout = _read_jsonl(data_dir / "prefs_heldout.jsonl")
    rl_prompts = _read_jsonl(data_dir / "prompts.jsonl")
    test_prompts = load_prompts("test", limit=cfg.n_test)
    gold = load_gold_reward(cfg.gold)
    reference, tokenizer = load_model(cfg.base_model)
    ref = reference_samples(reference, tokenizer, test_prompts, gold, cfg.sampling)
    reward_init = init_reward_model(cfg.base_model, out / "reward_init")

    # The untrained base policy, evaluated like a method: KL 0 and a win rate near 1/2 calibrate the table.
    base = evaluate(reference, tokenizer, reference, test_prompts, gold, config=cfg.sampling, ref=ref)
    runs: list[dict[str, Any]] = [
        {"method": "base", "size": cfg.n_demos, "seed": 0, "config": {}, "train_seconds": 0.0}
        | {"metrics": base.metrics, "samples": base.rows()}
    ]
    jobs = [(m, cfg.n_demos, s) for m in cfg.methods for s in cfg.seeds]
    sweep_seeds = cfg.sweep_seeds if cfg.sweep_seeds is not None else cfg.seeds
    jobs += [(m, n, s) for n in cfg.sizes for m in cfg.sweep_methods if m in cfg.methods for s in sweep_seeds]
    for index, (method, size, seed) in enumerate(jobs):
        trainer, needs, values = method_config(method, cfg, seed)
        run_dir = out / "runs" / f"{method}_n{size}_s{seed}"
        data = {"demos": demos[:size], "prefs": prefs[: min(size, cfg.n_prefs)], "prompts": rl_prompts}
        print(f"[bench {index + 1}/{len(jobs)}] {method} n={size} seed={seed}", flush=True)
        record: dict[str, Any] = {"method": method, "size": size, "seed": seed, "config": values}
        done = _finished(run_dir, record, cfg)
        if done is not None:  # resume: an earlier run of the same job and settings is reused
            print(f"[bench] reusing {run_dir}", flush=True)
            runs.append(done)
            continue
        t0 = time.perf_counter()
        try:
            torch.manual_seed(seed)
            start_reward = reward_init
            if method in WARM_START:
                warm = {k: v for k, v in values.items() if k in COMMON or k in ("seed", "batch_size")}
                warm |= {"max_steps": cfg.rlhf_reward_steps, "learning_rate": values["reward_learning_rate"]}
                run_training(
                    "reward",
                    cfg.base_model,
                    str(run_dir / "warmup"),
                    str(reward_init),
                    config=warm,
                    prefs=data["prefs"],
                )
                start_reward = run_dir / "warmup" / "reward_model"
            train_metrics = run_training(
                trainer,
                cfg.base_model,
                str(run_dir),
                reward_model=str(start_reward) if trainer in ("aihf", "rlhf") else None,
                config=values,
                **{k: data[k] for k in needs},
            )
            record["train_seconds"] = time.perf_counter() - t0
            record["train_metrics"] = {k: v for k, v in train_metrics.items() if isinstance(v, (int, float))}
            policy, _ = load_model(run_dir / "policy")
            rm = rm_tok = None
            if (run_dir / "reward_model").is_dir():
                rm, rm_tok = load_model(run_dir / "reward_model", kind="reward")
            result = evaluate(
                policy,
                tokenizer,
                reference,
                test_prompts,
                gold,
                config=cfg.sampling,
                ref=ref,
                reward_model=rm,
                reward_tokenizer=rm_tok,
                prefs=heldout,
                seed=seed,
            )
            record["metrics"] = result.metrics
            record["samples"] = result.rows()
        except Exception as err:  # one failing method must not hide the others' results
            record["error"] = f"{type(err).__name__}: {err}"
            record["traceback"] = traceback.format_exc()
            print(record["traceback"], flush=True)
        record["seconds"] = time.perf_counter() - t0
        record["evaluation"] = _eval_settings(cfg)
        runs.append(record)
        write_json(run_dir / "eval.json", record)

    results = summarise(runs, cfg, ref, gold_name(gold), time.perf_counter() - start)
    plots = make_plots(out, results, runs)
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results, plots, data_dir))
    return results


def _eval_settings(cfg: BenchConfig) -> dict[str, Any]:
    return {
        "n_test": cfg.n_test,
        "gold": cfg.gold,
        "sampling": asdict(cfg.sampling),
        "base_model": cfg.base_model,
        "data_dir": cfg.data_dir,
    }


def _finished(run_dir: Path, record: dict[str, Any], cfg: BenchConfig) -> dict[str, Any] | None:
    """The saved record of this job if it finished with the same training and evaluation settings."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    same = saved.get("config") == record["config"] and saved.get("evaluation") == _eval_settings(cfg)
    return saved if same and "metrics" in saved else None


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def summarise(
    runs: list[dict[str, Any]], cfg: BenchConfig, ref: Any, gold: str, seconds: float
) -> dict[str, Any]:
    """Per method at the main data size: the metrics averaged over seeds (std across seeds beside)."""
    methods: dict[str, dict[str, Any]] = {}
    for method in ["base", *cfg.methods]:
        done = [r for r in runs if r["method"] == method and r["size"] == cfg.n_demos and "metrics" in r]
        failed = [r["error"] for r in runs if r["method"] == method and "error" in r]
        if not done:
            methods[method] = {"error": failed[0] if failed else "not run"}
            continue
        keys = sorted(set.intersection(*(set(r["metrics"]) for r in done)))
        entry: dict[str, Any] = {k: float(np.mean([r["metrics"][k] for r in done])) for k in keys}
        entry["seeds"] = len(done)
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in done]))
        if len(done) > 1:
            entry["across_seeds_std"] = {k: float(np.std([r["metrics"][k] for r in done])) for k in keys}
        methods[method] = entry
    sweep = [
        {"method": r["method"], "size": r["size"], "seed": r["seed"], **r["metrics"]}
        for r in runs
        if "metrics" in r
    ]
    ref_gold = np.asarray(ref.gold)
    return {
        "gold_reward": gold,
        "reference": {"gold_reward_mean": float(ref_gold.mean()), "gold_reward_std": float(ref_gold.std())},
        "methods": methods,
        "runs": sweep,
        "config": asdict(cfg),
        "seconds": seconds,
        "run_seconds": float(sum(r.get("seconds", 0.0) for r in runs)),
    }


def make_plots(out: Path, results: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, str]:
    """PNG plots (paths relative to `out`): gold reward per method, reward vs KL, learned vs gold,
    and the data-size sweep when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    ok = {m: v for m, v in results["methods"].items() if "gold_reward_mean" in v}
    if not ok:
        return plots
    names = list(ok)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(
        names,
        [ok[m]["gold_reward_mean"] for m in names],
        color=["C0" if "aihf" in m else "C7" for m in names],
    )
    ax.axhline(results["reference"]["gold_reward_mean"], color="k", ls="--", lw=1, label="base policy")
    ax.set_ylabel(f"gold reward ({results['gold_reward']})")
    ax.set_title("Gold reward of each method's policy on the test prompts")
    ax.legend()
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    plots["gold_reward"] = "gold_reward.png"
    fig.savefig(out / plots["gold_reward"], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(results["config"]["methods"]):
        pts = [(r["kl_to_ref"], r["gold_reward_mean"]) for r in results["runs"] if r["method"] == method]
        if pts:
            ax.scatter(*zip(*pts), label=method, color=f"C{i}", marker="o" if "aihf" in method else "x")
    ax.scatter([0], [results["reference"]["gold_reward_mean"]], color="k", marker="*", s=120, label="base")
    ax.set_xlabel("KL to the base policy (nats per completion)")
    ax.set_ylabel("gold reward")
    ax.set_title("Reward vs KL (every run)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plots["reward_vs_kl"] = "reward_vs_kl.png"
    fig.savefig(out / plots["reward_vs_kl"], dpi=120)
    plt.close(fig)

    main_size = results["config"]["n_demos"]
    learned = [
        r for r in runs if r.get("samples") and "learned" in r["samples"][0] and r["size"] == main_size
    ]
    if learned:
        fig, axes = plt.subplots(1, len({r["method"] for r in learned}), figsize=(9, 3.5), squeeze=False)
        for ax, method in zip(axes[0], sorted({r["method"] for r in learned})):
            rows = [s for r in learned if r["method"] == method for s in r["samples"]]
            ax.scatter([s["gold"] for s in rows], [s["learned"] for s in rows], s=6, alpha=0.5)
            ax.set_title(f"{method}: learned vs gold")
            ax.set_xlabel("gold reward")
            ax.set_ylabel("learned reward")
        fig.tight_layout()
        plots["learned_vs_gold"] = "learned_vs_gold.png"
        fig.savefig(out / plots["learned_vs_gold"], dpi=120)
        plt.close(fig)

    sizes = sorted({r["size"] for r in results["runs"]})
    if len(sizes) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, method in enumerate(results["config"]["sweep_methods"]):
            means = []
            for n in sizes:
                vals = [
                    r["gold_reward_mean"] for r in results["runs"] if r["method"] == method and r["size"] == n
                ]
                means.append(np.mean(vals) if vals else np.nan)
            ax.plot(sizes, means, marker="o", color=f"C{i}", label=method)
        ax.set_xlabel("demonstrations = preference pairs")
        ax.set_ylabel("gold reward")
        ax.set_title("Data-size sweep")
        ax.legend()
        fig.tight_layout()
        plots["size_sweep"] = "size_sweep.png"
        fig.savefig(out / plots["size_sweep"], dpi=120)
        plt.close(fig)
    return plots


def _fmt(entry: dict[str, Any], key: str, digits: int = 3) -> str:
    value = entry.get(key)
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def render_report(results: dict[str, Any], plots: dict[str, str], data_dir: Path) -> str:
    cfg = results["config"]
    lines = [
        f"Gold reward: `{results['gold_reward']}`. Base policy on the test prompts: "
        f"{results['reference']['gold_reward_mean']:.3f} +- {results['reference']['gold_reward_std']:.3f}. "
        f"{cfg['n_test']} test prompts, {cfg['n_demos']} demonstrations, {cfg['n_prefs']} preference pairs, "
        f"seeds {cfg['seeds']}. Training + evaluation of all runs: {results['run_seconds'] / 60:.1f} min "
        f"(this invocation: {results['seconds'] / 60:.1f} min; finished runs are reused). "
        "Gold reward: mean +- std over samples (standard error), averaged over seeds; "
        "seed std: std of the per-seed means.",
        "",
        "| method | gold reward (mean +- std, s.e.) | seed std | KL to base | win rate vs base "
        "| learned-reward acc. | learned-gold Spearman | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, e in results["methods"].items():
        if "error" in e:
            lines.append(f"| {method} | failed: {e['error'][:80]} | | | | | | |")
            continue
        cells = [
            method,
            f"{_fmt(e, 'gold_reward_mean')} +- {_fmt(e, 'gold_reward_std')} ({_fmt(e, 'gold_reward_sem')})",
            _fmt(e.get("across_seeds_std", {}), "gold_reward_mean"),
            _fmt(e, "kl_to_ref", 2),
            _fmt(e, "win_rate", 2),
            _fmt(e, "reward_accuracy", 2),
            _fmt(e, "learned_gold_spearman", 2),
            f"{e['train_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pairs (AIHF variant vs its baseline), gold reward difference:", ""]
    for a, b in PAIRS:
        ea, eb = results["methods"].get(a, {}), results["methods"].get(b, {})
        if "gold_reward_mean" in ea and "gold_reward_mean" in eb:
            diff = ea["gold_reward_mean"] - eb["gold_reward_mean"]
            kl = f"KL {ea['kl_to_ref']:.2f} vs {eb['kl_to_ref']:.2f}"
            lines.append(f"- {a} vs {b}: {diff:+.3f} ({a} {'higher' if diff > 0 else 'lower'}; {kl})")
    quality = data_dir / "quality.md"
    if quality.is_file():
        lines += [
            "",
            "Training data quality (gold reward, the paper's Table 3):",
            "",
            quality.read_text().strip(),
        ]
    for title, key in (
        ("Gold reward per method", "gold_reward"),
        ("Reward vs KL", "reward_vs_kl"),
        ("Learned reward vs gold reward on the policy's samples", "learned_vs_gold"),
        ("Data-size sweep", "size_sweep"),
    ):
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    return "\n".join(lines) + "\n"
