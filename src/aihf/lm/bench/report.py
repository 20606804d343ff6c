"""The LM benchmark's report: per-method seed means, the pair tests, sweeps, frontier and plots.

Everything here reads records (a job's eval.json) or results.json, never a model: a report can be
regenerated from committed records alone (`aihf lm bench --report-only --records DIR`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from aihf.experiments.report import fmt, holm, pair_test, sd, verdict

# Pairs compared when a protocol names none (results.json from before protocols listed their pairs).
PAIRS = [["aihf", "rlhf"], ["aihf-warm", "rlhf"], ["aihf-sft", "rlhf"], ["direct-aihf", "dpo"]]
PAIRS += [["direct-aihf", "rpo"], ["self-play-aihf", "spin"]]


def is_main(run: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """A run at the main data sizes and KL weight (not a sweep point); `cfg` as in results.json."""
    return (run["demos"], run["prefs"], run["kl_scale"]) == (cfg["n_demos"], cfg["n_prefs"], 1.0)


def gold_range(gold: str) -> str:
    """The gold reward's range in words, for the report and the plots' readers."""
    if gold.startswith("fluent-sentiment"):
        return (
            "VADER sentiment mapped to [0, 1] minus 0.5 per nat/token of the completion's mean NLL under the "
            "frozen base above 4.5: at most 1, lower for implausible text"
        )
    if gold.startswith("on-task-sentiment"):
        return (
            "in [0, 1]: positive sentiment of a fluent continuation of the prompt's text, 0 for off-task "
            "talk, word salad, repetition and empty answers (docs/gold.md)"
        )
    if gold.startswith("vader"):
        return "VADER compound sentiment, in [-1, 1]"
    return "a custom gold reward"


def model_name(results: dict[str, Any]) -> str:
    """The base model's directory name (the policy every method starts from)."""
    return Path(str(results["config"].get("base_model", "?"))).name


def summarise(
    runs: list[dict[str, Any]], config: dict[str, Any], ref_gold: list[float], gold: str, seconds: float
) -> dict[str, Any]:
    """Per method at the main data size: the metrics averaged over seeds (std across seeds beside).
    `config`: the benchmark's config as results.json keeps it; `ref_gold`: the gold rewards of the
    base policy's reference samples."""
    methods: dict[str, dict[str, Any]] = {}
    for method in ["base", *config["methods"], *config["diagnostic_methods"]]:
        done = [r for r in runs if r["method"] == method and is_main(r, config) and "metrics" in r]
        failed = [r["error"] for r in runs if r["method"] == method and "error" in r]
        if not done:
            methods[method] = {"error": failed[0] if failed else "not run"}
            continue
        keys = sorted(set.intersection(*(set(r["metrics"]) for r in done)))
        entry: dict[str, Any] = {k: float(np.mean([r["metrics"][k] for r in done])) for k in keys}
        entry["seeds"] = len(done)
        counts = sorted({r["policy_updates"] for r in done if "policy_updates" in r})
        entry["policy_updates"] = "/".join(map(str, counts)) or "–"
        # a resumed run's clock covers its last process only: time the runs that ran in one go
        timed = [r for r in done if not r.get("resumed")] or done
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in timed]))
        if len(done) > 1:
            entry["across_seeds_std"] = {k: sd([r["metrics"][k] for r in done]) for k in keys}
        methods[method] = entry
    sweep = [
        {k: r[k] for k in ("method", "demos", "prefs", "kl_scale", "seed")}
        | r["metrics"]
        | {"beta": r["config"].get("beta")}
        for r in runs
        if "metrics" in r
    ]
    return {
        "gold_reward": gold,
        "reference": {"gold_reward_mean": float(np.mean(ref_gold)), "gold_reward_std": sd(list(ref_gold))},
        "methods": methods,
        "runs": sweep,
        # gold reward against training steps (paper Fig. 6): method -> seed -> snapshot evaluations
        "curves": {
            m: {str(r["seed"]): r["curve"] for r in runs if r["method"] == m and r.get("curve")}
            for m in config["methods"]
            if any(r["method"] == m and r.get("curve") for r in runs)
        },
        "config": config,
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
    variants = _variants(results["config"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    seeds = [ok[m].get("seeds", 1) for m in names]
    spread = [ok[m].get("across_seeds_std", {}).get("gold_reward_mean", 0.0) for m in names]
    ax.bar(
        names,
        [ok[m]["gold_reward_mean"] for m in names],
        color=["C0" if m in variants else "C7" for m in names],
        yerr=spread if max(seeds) > 1 else None,  # a band only where seeds exist
        capsize=3,
    )
    ax.axhline(results["reference"]["gold_reward_mean"], color="k", ls="--", lw=1, label="base policy")
    from matplotlib.patches import Patch

    handles = [*ax.get_legend_handles_labels()[0], Patch(color="C0"), Patch(color="C7")]
    ax.legend(handles, ["base policy (reference samples)", "AIHF variant", "baseline / base row"], fontsize=7)
    ax.set_ylabel("gold reward")
    what = "seed mean, bars: seed std" if max(seeds) > 1 else "one seed"
    ax.set_title(f"{model_name(results)}: gold reward on the test prompts ({what})", fontsize=9)
    ax.tick_params(axis="x", rotation=30)
    _save_plot(fig, out, plots, "gold_reward")

    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, method in enumerate([*cfg["methods"], *cfg.get("diagnostic_methods", [])]):
        main = [r for r in results["runs"] if r["method"] == method and is_main(r, cfg)]
        if main:
            ax.scatter(
                [r["kl_to_ref"] for r in main],
                [r["gold_reward_mean"] for r in main],
                label=f"{method} (diagnostic)" if method in cfg.get("diagnostic_methods", []) else method,
                color=f"C{i}",
                marker="o" if method in _variants(cfg) else "x",
            )
        frontier = _frontier(results["runs"], method, cfg)
        if len(frontier) > 1:
            ax.errorbar(
                [f["kl"] for f in frontier],
                [f["gold"] for f in frontier],
                xerr=[f["kl_std"] for f in frontier],
                yerr=[f["gold_std"] for f in frontier],
                color=f"C{i}",
                lw=1,
                capsize=2,
            )
    base_rows = [r for r in results["runs"] if r["method"] == "base" and is_main(r, cfg)]
    if base_rows:  # the table's `base` row: the base policy scored on samples of its own
        ax.scatter(
            [r["kl_to_ref"] for r in base_rows],
            [r["gold_reward_mean"] for r in base_rows],
            color="gray",
            marker="+",
            s=80,
            label="base row (its own samples)",
        )
    ax.scatter(
        [0],
        [results["reference"]["gold_reward_mean"]],
        color="k",
        marker="*",
        s=120,
        label="base policy (reference samples)",
    )
    ax.set_xlabel("KL to the base policy (nats per completion)")
    ax.set_ylabel("gold reward")
    swept = any(len(_frontier(results["runs"], m, cfg)) > 1 for m in cfg["methods"])
    seeds = _sweep_seeds(cfg)
    note = f"; lines: beta sweep, seeds {seeds}" if swept else ""
    ax.set_title(f"{model_name(results)}: gold reward vs KL (a point per run{note})", fontsize=9)
    ax.legend(fontsize=7)
    _save_plot(fig, out, plots, "reward_vs_kl")

    learned = [r for r in runs if r.get("samples") and "learned" in r["samples"][0] and is_main(r, cfg)]
    if learned:
        fig, axes = plt.subplots(1, len({r["method"] for r in learned}), figsize=(9, 3.5), squeeze=False)
        for ax, method in zip(axes[0], sorted({r["method"] for r in learned})):
            rows = [s for r in learned if r["method"] == method for s in r["samples"]]
            ax.scatter([s["gold"] for s in rows], [s["learned"] for s in rows], s=6, alpha=0.5)
            ax.set_title(f"{method}: learned vs gold")
            ax.set_xlabel("gold reward")
            ax.set_ylabel("learned reward")
        _save_plot(fig, out, plots, "learned_vs_gold")

    if results.get("curves"):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, (method, by_seed) in enumerate(results["curves"].items()):
            for seed, curve in by_seed.items():
                steps = [p["step"] for p in curve]
                ax.plot(
                    steps,
                    [p["gold_reward_mean"] for p in curve],
                    marker="o",
                    color=f"C{i}",
                    label=f"{method} (seed {seed})",
                )
        ax.axhline(results["reference"]["gold_reward_mean"], color="k", ls="--", lw=1, label="base policy")
        ax.set_xlabel("training units (optimiser steps; iterations for AIHF / RLHF's RL stage)")
        ax.set_ylabel("gold reward")
        ax.set_title(f"{model_name(results)}: gold reward of the policy snapshots")
        ax.legend(fontsize=7)
        _save_plot(fig, out, plots, "gold_vs_steps")

    sweeps = [(axis, _size_sweep(results["runs"], cfg, axis)) for axis in ("prefs", "demos")]
    sweeps = [(axis, table) for axis, table in sweeps if table]
    if sweeps:
        fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4), squeeze=False)
        for ax, (axis, table) in zip(axes[0], sweeps):
            for i, (method, points) in enumerate(table.items()):
                sizes = sorted(points)
                ax.plot(sizes, [points[n] for n in sizes], marker="o", color=f"C{i}", label=method)
            fixed = "demonstrations" if axis == "prefs" else "preference pairs"
            ax.set_xlabel(f"{'preference pairs' if axis == 'prefs' else 'demonstrations'} ({fixed} fixed)")
            ax.set_ylabel("gold reward")
            ax.legend()
        fig.suptitle(f"{model_name(results)}: data-size sweeps (gold reward, seeds {_sweep_seeds(cfg)})")
        _save_plot(fig, out, plots, "size_sweep")
    return plots


def _variants(cfg: dict[str, Any]) -> set[str]:
    """The methods on the AIHF side of the protocol's pairs (drawn apart from their baselines)."""
    return {a for a, _ in cfg.get("pairs") or PAIRS}


def _save_plot(fig: Any, out: Path, plots: dict[str, str], key: str) -> None:
    """Lay out, write OUT/<key>.png, record it in `plots` and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    plots[key] = f"{key}.png"
    fig.savefig(out / plots[key], dpi=120)
    plt.close(fig)


def _sweep_seeds(cfg: dict[str, Any]) -> list[int]:
    return cfg["sweep_seeds"] if cfg["sweep_seeds"] is not None else cfg["seeds"]


def _frontier(rows: list[dict[str, Any]], method: str, cfg: dict[str, Any]) -> list[dict[str, float]]:
    """The method's frontier at the main data sizes: per KL weight beta, gold reward and KL to the base
    averaged over the sweep seeds (with their std across seeds), in increasing beta."""
    by_beta: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        main_data = (r["demos"], r["prefs"]) == (cfg["n_demos"], cfg["n_prefs"])
        if r["method"] == method and main_data and r["seed"] in _sweep_seeds(cfg) and r["beta"] is not None:
            by_beta.setdefault(r["beta"], []).append(r)
    points = []
    for beta, runs in sorted(by_beta.items()):
        gold, kl = [r["gold_reward_mean"] for r in runs], [r["kl_to_ref"] for r in runs]
        points.append(
            {"beta": beta, "gold": float(np.mean(gold)), "gold_std": sd(gold)}
            | {"kl": float(np.mean(kl)), "kl_std": sd(kl), "n": len(runs)}
        )
    return points


def _size_sweep(rows: list[dict[str, Any]], cfg: dict[str, Any], axis: str) -> dict[str, dict[int, float]]:
    """method -> {size: gold reward averaged over the sweep seeds} along `axis` ("prefs" or "demos")."""
    other = "demos" if axis == "prefs" else "prefs"
    if not cfg["pref_sizes" if axis == "prefs" else "demo_sizes"]:
        return {}
    table: dict[str, dict[int, float]] = {}
    for method in cfg["sweep_methods"]:
        points: dict[int, list[float]] = {}
        for r in rows:
            if (
                r["method"] == method
                and r["kl_scale"] == 1.0
                and r[other] == cfg[f"n_{other}"]
                and r["seed"] in _sweep_seeds(cfg)
            ):
                points.setdefault(r[axis], []).append(r["gold_reward_mean"])
        if len(points) > 1:
            table[method] = {n: float(np.mean(v)) for n, v in points.items()}
    return table


def permutation_floor(seeds: int) -> str:
    """The smallest exact two-sided permutation p that `seeds` seeds an arm allow, in words: the
    observed labelling and its mirror image are 2 of the C(2n, n) relabellings."""
    if seeds < 2:
        return f"with {seeds} seed an arm there is no test"
    return f"with {seeds} seeds an arm it cannot go below {2 / math.comb(2 * seeds, seeds):.3g}"


def pair_tests(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pair of the protocol's `pairs` with runs of both methods: Welch's t (its df) and the exact
    permutation test on the per-seed gold rewards of the main runs, Holm-adjusted over the pairs
    that are claims (diagnostics, added after seeing a result, are tested but decide nothing)."""
    cfg = results["config"]
    diagnostic = set(cfg.get("diagnostic_methods", []))
    per_seed: dict[str, list[float]] = {}
    for r in results["runs"]:
        if is_main(r, cfg):
            per_seed.setdefault(r["method"], []).append(r["gold_reward_mean"])
    pairs = []
    for a, b in cfg.get("pairs") or PAIRS:
        ea, eb = results["methods"].get(a, {}), results["methods"].get(b, {})
        if "gold_reward_mean" in ea and "gold_reward_mean" in eb:
            pairs.append(
                {"a": a, "b": b, "test": pair_test(per_seed[a], per_seed[b]), "claim": a not in diagnostic}
            )
    claims = [p for p in pairs if p["claim"]]
    for p, adjusted in zip(claims, holm([p["test"].p_welch for p in claims])):
        p["p_holm"] = adjusted
    return pairs


def _cell(entry: dict[str, Any], key: Any, digits: int = 3) -> str:
    return fmt(entry.get(key), digits)


def plateau(by_seed: dict[str, list[dict[str, float]]]) -> tuple[int | None, int | None]:
    """(the first snapshot step at which the seed-mean curve has flattened, the last step), by the
    protocol's rule: |mean of the last three snapshots - mean of the three before| below the standard
    error of that difference. A snapshot's seed mean has s.e. sqrt(sum of the seeds' s.e.^2) / seeds,
    and the difference of two means of three has sqrt(sum of the six s.e.^2) / 3. Only steps every
    seed has are used; a curve without s.e. (recorded before they were kept) never counts as flat."""
    curves = list(by_seed.values())
    steps = sorted(set.intersection(*(set(p["step"] for p in c) for c in curves))) if curves else []
    at = [{p["step"]: p for p in c} for c in curves]
    mean = [float(np.mean([c[s]["gold_reward_mean"] for c in at])) for s in steps]
    sems = [[c[s].get("gold_reward_sem") for c in at] for s in steps]
    sem = [float(np.sqrt(sum(x * x for x in v)) / len(v)) if None not in v else None for v in sems]
    for k in range(6, len(steps) + 1):
        window = sem[k - 6 : k]
        if None in window:
            continue
        diff = np.mean(mean[k - 3 : k]) - np.mean(mean[k - 6 : k - 3])
        if abs(diff) < np.sqrt(sum(x * x for x in window)) / 3:
            return steps[k - 1], steps[-1]
    return None, steps[-1] if steps else None


def _used(asked: int, path: Path) -> str:
    """How many rows of a data file the runs train on: `asked`, or all there are when the file has fewer
    (the bench slices the first `asked` rows)."""
    if not path.is_file():
        return str(asked)
    rows = sum(1 for line in path.read_text().splitlines() if line.strip())
    return str(asked) if rows >= asked else f"{rows} (all the data has; the protocol asks for {asked})"


def render_report(results: dict[str, Any], plots: dict[str, str], data_dir: Path) -> str:
    cfg = results["config"]
    diagnostic = set(cfg.get("diagnostic_methods", []))
    lines = [
        f"Model: {model_name(results)}. Gold reward: `{results['gold_reward']}` "
        f"({gold_range(results['gold_reward'])}); KL to the base policy in nats per completion. "
        "Base policy on the test prompts: "
        f"{results['reference']['gold_reward_mean']:.3f} +- {results['reference']['gold_reward_std']:.3f} "
        "(its reference samples, against which KL and win rate are measured; the `base` row scores the "
        "same policy as a method, on samples of its own, so the two differ by sampling noise only). "
        f"{cfg['n_test']} test prompts, {_used(cfg['n_demos'], data_dir / 'demos.jsonl')} demonstrations, "
        f"{_used(cfg['n_prefs'], data_dir / 'prefs.jsonl')} preference pairs, "
        f"seeds {cfg['seeds']}. {len(results['runs']) - 1} runs; training + evaluation summed over runs: "
        f"{results['run_seconds'] / 60:.1f} min; this invocation: {results['seconds'] / 60:.1f} min wall "
        "(finished runs are reused; parallel workers overlap runs). "
        "Gold reward: mean +- std over samples (standard error), averaged over seeds; "
        "seed std: std of the per-seed means. updates: optimiser steps on the policy, its SFT start or "
        "stage included (a pair compares methods at the same count). train s: seed mean of the training "
        "time (of the seeds that ran in one go, where any did)."
        + (
            " A row marked (diagnostic) was added after seeing a result, to explain it, and enters no "
            "verdict."
            if diagnostic
            else ""
        ),
        "",
        "| method | seeds | updates | gold reward (mean +- std, s.e.) | seed std | KL to base "
        "| win rate vs base | learned-reward acc. | learned-gold Spearman (own samples / base samples) "
        "| train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, e in results["methods"].items():
        label = f"{method} (diagnostic)" if method in diagnostic else method
        if "error" in e:
            state = "not run yet" if e["error"] == "not run" else f"failed: {e['error'][:80]}"
            lines.append(f"| {label} | 0 | | {state} | | | | | | |")
            continue
        cells = [
            label,
            str(e.get("seeds", 1)),
            str(e.get("policy_updates", "–")),
            f"{_cell(e, 'gold_reward_mean')} +- {_cell(e, 'gold_reward_std')} "
            f"({_cell(e, 'gold_reward_sem')})",
            _cell(e.get("across_seeds_std", {}), "gold_reward_mean"),
            _cell(e, "kl_to_ref", 2),
            _cell(e, "win_rate", 2),
            _cell(e, "reward_accuracy", 2),
            f"{_cell(e, 'learned_gold_spearman', 2)} / {_cell(e, 'common_learned_gold_spearman', 2)}",
            f"{e['train_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pairs (AIHF variant vs its baseline): difference of the seed-mean gold rewards; Welch's t on the "
        "per-seed means with its degrees of freedom and p; the exact two-sided permutation p (every "
        f"relabelling of the pooled seeds; {permutation_floor(len(cfg['seeds']))}); Holm's adjustment of "
        "the Welch p over the pairs that are claims. A pair is decided when the Holm-adjusted p is below "
        "0.05:",
        "",
    ]
    for pair in pair_tests(results):
        a, b, test = pair["a"], pair["b"], pair["test"]
        ea, eb = results["methods"][a], results["methods"][b]
        decision = verdict(a, b, test, pair["p_holm"]) if pair["claim"] else "a diagnostic: no verdict"
        kl = f"KL {ea['kl_to_ref']:.2f} vs {eb['kl_to_ref']:.2f}"
        seeds = f"{ea['seeds']} vs {eb['seeds']} seeds"
        if min(ea["seeds"], eb["seeds"]) < len(cfg["seeds"]):
            seeds += f", provisional until both have {len(cfg['seeds'])}"
        stats = (
            f"s.e. {fmt(test.se)}, Welch t {fmt(test.t, 2)} on {fmt(test.df, 1)} df, p {fmt(test.p_welch)}"
        )
        stats += f", permutation p {fmt(test.p_perm)}" + (
            f", Holm p {fmt(pair['p_holm'])}" if pair["claim"] else ""
        )
        lines.append(f"- {a} vs {b}: {test.diff:+.3f} ({stats}): {decision}; {kl} ({seeds})")
    for axis, title in (("prefs", "Preference pairs varied"), ("demos", "Demonstrations varied")):
        table = _size_sweep(results["runs"], cfg, axis)
        if table:
            sizes = sorted({n for points in table.values() for n in points})
            fixed = f"{cfg['n_demos']} demonstrations" if axis == "prefs" else f"{cfg['n_prefs']} pairs"
            lines += ["", f"{title} ({fixed}; gold reward, seeds {_sweep_seeds(cfg)}):", ""]
            lines += [
                "| method | " + " | ".join(str(n) for n in sizes) + " |",
                "| --- |" + " --- |" * len(sizes),
            ]
            for method, points in table.items():
                lines.append(f"| {method} | " + " | ".join(_cell(points, n) for n in sizes) + " |")
    if cfg["kl_scales"]:
        lines += ["", f"Reward-vs-KL frontier (KL weight beta varied; seeds {_sweep_seeds(cfg)}):", ""]
        lines += ["| method | beta | gold reward (seed std) | KL to base (seed std) | seeds |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for method in cfg["sweep_methods"]:
            for f in _frontier(results["runs"], method, cfg):
                lines.append(
                    f"| {method} | {f['beta']:g} | {f['gold']:.3f} ({f['gold_std']:.3f}) "
                    f"| {f['kl']:.1f} ({f['kl_std']:.1f}) | {f['n']} |"
                )
    if results.get("curves"):
        lines += [
            "",
            "Plateau rule (docs/lm_protocol_v2.md, section 3): a curve has flattened at the first snapshot "
            "where the mean gold of its last three snapshots differs from that of the three before by less "
            "than the standard error of that difference (seed-mean curves; training units as recorded):",
            "",
        ]
        for method, by_seed in results["curves"].items():
            flat, last = plateau(by_seed)
            lines.append(
                f"- {method}: " + (f"flattened at {flat}" if flat is not None else f"not flattened by {last}")
            )
        lines += [
            "",
            "Gold reward (KL to base) of the policy snapshots against training units (paper Fig. 6):",
            "",
        ]
        for method, by_seed in results["curves"].items():
            for seed, curve in by_seed.items():
                points = ", ".join(
                    f"{p['step']}: {p['gold_reward_mean']:.3f} ({p['kl_to_ref']:.1f})" for p in curve
                )
                lines.append(f"- {method}, seed {seed}: {points}")
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
        ("Gold reward against training steps", "gold_vs_steps"),
    ):
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    return "\n".join(lines) + "\n"
