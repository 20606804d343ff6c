"""The paper's discrete-choice experiments (v1 section 4) and a data-ratio sweep.

Actions are numbered from 0 everywhere (reports, plots, CSV, CLI), as in the Python API; the paper
counts from 1, so its actions 1..45 are 0..44 here.

- `example1`: two actions with equal true reward, the paper's two data sets; AIHF is the pooled
  estimate 56/110 in both, while RLHF follows whichever source happens to be wrong.
- `variance`: Monte-Carlo variance of each estimator of pi_0 with two actions, against
  p(1-p)/|D| (SFT), p(1-p)/|P| (RM) and p(1-p)/(|D|+|P|) (AIHF).
- `example2`: 50 actions, demonstrations only cover 0..44, full BTL comparisons (paper Fig. 2):
  SFT and RLHF put zero mass on 45..49, AIHF keeps it.
- `sweep`: total-variation error of each estimator as |D| and |P| vary.

Each writes JSON + CSV + PNG files into `out_dir` (atomically) and returns a `Report` whose
`table()` is printed by the CLI and whose `markdown()` goes into the quickstart report.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aihf.choice.data import ChoiceData, make_data
from aihf.choice.estimators import Estimates, estimate_all
from aihf.choice.sampling import (
    gaussian_bump_reward,
    sample_demonstrations,
    sample_preferences,
    total_variation,
    true_policy,
)
from aihf.io import atomic_path, write_json, write_text

ESTIMATORS = ("sft", "rm", "rlhf", "aihf")
LABELS = {"sft": "SFT", "rm": "RM only", "rlhf": "RLHF", "aihf": "AIHF", "truth": "truth"}
COLORS = {"sft": "tab:blue", "rm": "tab:gray", "rlhf": "tab:orange", "aihf": "tab:green", "truth": "black"}


@dataclass
class Report:
    """A result table plus the files written for it."""

    title: str
    columns: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    def table(self) -> str:
        cells = [self.columns] + [[_fmt(v) for v in row] for row in self.rows]
        widths = [max(len(r[k]) for r in cells) for k in range(len(self.columns))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([self.title, *lines, *self.notes])

    def markdown(self, relative_to: Path) -> str:
        def cell(value: object) -> str:
            return _fmt(value).replace("|", "\\|")

        head = "| " + " | ".join(map(cell, self.columns)) + " |\n|" + "---|" * len(self.columns) + "\n"
        body = "".join("| " + " | ".join(map(cell, row)) + " |\n" for row in self.rows)
        notes = "".join(f"\n{note}\n" for note in self.notes)
        images = "".join(f"\n![{p.stem}]({p.relative_to(relative_to).as_posix()})\n" for p in self.plots)
        return f"**{self.title}**\n\n{head}{body}{notes}{images}"

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


# ---------------------------------------------------------------------------------------- Example 1

EXAMPLE1 = {
    "A: D=50/50, P 0>1 x6, 1>0 x4": ([50, 50], [[0, 6], [4, 0]]),
    "B: D=6/4, P 0>1 x50, 1>0 x50": ([6, 4], [[0, 50], [50, 0]]),
}


def example1(out_dir: Path, beta: float = 1.0, alpha: float = 1.0) -> Report:
    """Both data sets of the paper's Example 1 (truth: equal rewards, pi_0 = 0.5)."""
    results, rows = {}, []
    for name, (demos, prefs) in EXAMPLE1.items():
        est = estimate_all(make_data(demos, prefs), beta, alpha)
        results[name] = {"demo_counts": demos, "pref_counts": prefs, **_details(est)}
        policies = est.policies()
        rows.append([name, 0.5, *(policies[k][0] for k in ESTIMATORS), est.aihf.residual])
    report = Report(
        f"Example 1 (beta={beta:g}, alpha={alpha:g}): probability of action 0 (truth 0.5)",
        ["data", "truth", "SFT", "RM only", "RLHF", "AIHF", "AIHF FOC residual"],
        rows,
        notes=["AIHF = (n_0 + w_01) / (|D| + |P|) = 56/110 = 0.5091 in both data sets (pooled estimate)."],
    )
    write_json(out_dir / "example1.json", {"beta": beta, "alpha": alpha, "results": results})
    write_text(out_dir / "example1.csv", report.csv_text())

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.2
    for k, key in enumerate(ESTIMATORS):
        values = [row[2 + k] for row in rows]
        xs = np.arange(len(rows)) + (k - 1.5) * width
        ax.bar(xs, values, width, label=LABELS[key], color=COLORS[key])
        for x, v in zip(xs, values):
            ax.text(x, v + 0.005, f"{v:.3f}", ha="center", fontsize=7)
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="truth")
    ax.set_xticks(range(len(rows)), [row[0] for row in rows], fontsize=8)
    ax.set_ylim(0.4, 0.68)
    ax.set_ylabel("estimated pi(action 0)")
    ax.set_title("Example 1: AIHF pools demonstrations and preferences")
    ax.legend(fontsize=8, ncol=5, loc="upper center")
    report.plots.append(_save(fig, out_dir / "example1.png"))
    return report


def _details(est: Estimates) -> dict:
    return {
        "policies": est.policies(),
        "rm_reward": est.rm.reward.tolist(),
        "aihf_reward": est.aihf.reward.tolist(),
        "residual": {"rm": est.rm.residual, "aihf": est.aihf.residual},
        "ridge": {"rm": est.rm.ridge, "aihf": est.aihf.ridge},
    }


# ------------------------------------------------------------------------------------------ Variance

VARIANCE_CONFIGS = (
    (0.5, 100, 10),
    (0.5, 50, 50),
    (0.5, 10, 100),
    (0.8, 100, 10),
    (0.8, 50, 50),
    (0.8, 10, 100),
)


def pi0_estimates(n0: int, n_demos: int, w01: int, n_prefs: int, beta: float, alpha: float) -> np.ndarray:
    """pi_0 of (SFT, RM, RLHF, AIHF) for two actions with n0 of |D| demos on action 0 and w01 of |P| wins."""
    data = ChoiceData(np.array([n0, n_demos - n0]), np.array([[0, w01], [n_prefs - w01, 0]]))
    policies = estimate_all(data, beta, alpha).policies()
    return np.array([policies[k][0] for k in ESTIMATORS])


def variance(
    out_dir: Path,
    repeats: int = 2000,
    seed: int = 0,
    beta: float = 1.0,
    alpha: float = 1.0,
    configs: tuple[tuple[float, int, int], ...] = VARIANCE_CONFIGS,
) -> Report:
    """Monte-Carlo variance of pi_0 for each estimator (two actions) against the paper's formulas."""
    rng = np.random.default_rng(seed)
    rows, records = [], []
    for p, n_demos, n_prefs in configs:
        n0 = rng.binomial(n_demos, p, size=repeats)  # multinomial demonstrations with two actions
        w01 = rng.binomial(n_prefs, p, size=repeats)  # BTL: P(0 over 1) = pi_0 / (pi_0 + pi_1) = p
        cache: dict[tuple[int, int], np.ndarray] = {}  # the estimators depend on the counts only
        draws = np.array([_cached(cache, a, b, n_demos, n_prefs, beta, alpha) for a, b in zip(n0, w01)])
        var = draws.var(axis=0, ddof=1)
        q = p * (1 - p)
        theory = {"sft": q / n_demos, "rm": q / n_prefs, "aihf": q / (n_demos + n_prefs)}
        mean = draws.mean(axis=0)
        rows.append(
            [
                p,
                n_demos,
                n_prefs,
                var[0],
                theory["sft"],
                var[1],
                theory["rm"],
                var[2],
                mean[2],
                var[3],
                theory["aihf"],
                mean[3],
            ]
        )
        records.append(
            {
                "p": p,
                "n_demos": n_demos,
                "n_prefs": n_prefs,
                "repeats": repeats,
                "variance": dict(zip(ESTIMATORS, var.tolist())),
                "mean": dict(zip(ESTIMATORS, mean.tolist())),
                "theory": theory,
            }
        )
    report = Report(
        f"Variance of the pi_0 estimators, two actions, {repeats} Monte-Carlo repeats (beta={beta:g})",
        [
            "p",
            "|D|",
            "|P|",
            "Var SFT",
            "p(1-p)/|D|",
            "Var RM",
            "p(1-p)/|P|",
            "Var RLHF",
            "E RLHF",
            "Var AIHF",
            "p(1-p)/(|D|+|P|)",
            "E AIHF",
        ],
        rows,
        notes=[
            "AIHF is the pooled estimate (n_1 + w_12)/(|D|+|P|): unbiased, variance below both sources'.",
            "RLHF multiplies two estimates of the same odds, so for p != 0.5 it is biased towards 1 "
            "(its small variance there is that of a wrong answer).",
        ],
    )
    write_json(out_dir / "variance.json", {"beta": beta, "alpha": alpha, "seed": seed, "configs": records})
    write_text(out_dir / "variance.csv", report.csv_text())

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.2
    for k, key in enumerate(ESTIMATORS):
        xs = np.arange(len(records)) + (k - 1.5) * width
        ax.bar(xs, [r["variance"][key] for r in records], width, label=LABELS[key], color=COLORS[key])
    for key, offset, marker in (("sft", -1.5, "v"), ("rm", -0.5, "^"), ("aihf", 1.5, "o")):
        xs = np.arange(len(records)) + offset * width
        ax.scatter(xs, [r["theory"][key] for r in records], color="black", marker=marker, s=18, zorder=3)
    ax.scatter([], [], color="black", marker="o", s=18, label="theory p(1-p)/n")
    ax.set_yscale("log")
    ax.set_xticks(
        range(len(records)),
        [f"p={r['p']}\n|D|={r['n_demos']} |P|={r['n_prefs']}" for r in records],
        fontsize=7,
    )
    ax.set_ylabel("Var of estimated pi_0")
    ax.set_title("Monte-Carlo variance vs theory (black markers)")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    report.plots.append(_save(fig, out_dir / "variance.png"))
    return report


def _cached(
    cache: dict, n0: int, w01: int, n_demos: int, n_prefs: int, beta: float, alpha: float
) -> np.ndarray:
    key = (int(n0), int(w01))
    if key not in cache:
        cache[key] = pi0_estimates(key[0], n_demos, key[1], n_prefs, beta, alpha)
    return cache[key]


# ---------------------------------------------------------------------------------------- Example 2


def example2(
    out_dir: Path,
    repeats: int = 100,
    seed: int = 0,
    beta: float = 1.0,
    alpha: float = 1.0,
    n_actions: int = 50,
    n_covered: int = 45,
    n_demos: int = 2000,
    per_pair: int = 200,
) -> Report:
    """The coverage experiment (paper Fig. 2): demonstrations only from actions 0..n_covered-1."""
    rng = np.random.default_rng(seed)
    reward = gaussian_bump_reward(n_actions)
    truth = true_policy(reward, beta)
    covered = np.arange(n_actions) < n_covered
    policies = {k: np.empty((repeats, n_actions)) for k in ESTIMATORS}
    worst_residual = 0.0
    for rep in range(repeats):
        demos = sample_demonstrations(reward, n_demos, rng, beta, covered)
        prefs = sample_preferences(reward, rng, beta, per_pair=per_pair)
        est = estimate_all(ChoiceData(demos, prefs), beta, alpha)
        worst_residual = max(worst_residual, est.aihf.residual, est.rm.residual)
        for key, pi in est.policies().items():
            policies[key][rep] = pi
    uncovered = {k: v[:, ~covered].sum(axis=1) for k, v in policies.items()}
    tv = {k: np.array([total_variation(pi, truth) for pi in v]) for k, v in policies.items()}
    rows = [["truth", float(truth[~covered].sum()), 0.0, 0.0, 0.0]]
    for key in ESTIMATORS:
        rows.append(
            [
                LABELS[key],
                float(uncovered[key].mean()),
                float(uncovered[key].std()),
                float(tv[key].mean()),
                float(tv[key].std()),
            ]
        )
    report = Report(
        f"Example 2: {n_actions} actions, demonstrations ({n_demos}) cover 0..{n_covered - 1}, "
        f"{per_pair} BTL comparisons per pair, {repeats} repeats (beta={beta:g}, alpha={alpha:g})",
        ["policy", f"mass on {n_covered}..{n_actions - 1}", "std", "TV to truth", "TV std"],
        rows,
        notes=[f"Largest first-order-condition residual over all RM/AIHF solves: {worst_residual:.2e}."],
    )
    write_json(
        out_dir / "example2.json",
        {
            "beta": beta,
            "alpha": alpha,
            "seed": seed,
            "repeats": repeats,
            "n_demos": n_demos,
            "per_pair": per_pair,
            "covered": f"0..{n_covered - 1}",
            "truth_reward": reward.tolist(),
            "truth_policy": truth.tolist(),
            "max_residual": worst_residual,
            "mean_policy": {k: v.mean(axis=0).tolist() for k, v in policies.items()},
            "std_policy": {k: v.std(axis=0).tolist() for k, v in policies.items()},
            "uncovered_mass": {
                k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in uncovered.items()
            },
            "tv_to_truth": {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in tv.items()},
        },
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["action", "covered", "truth", *(f"{k}_mean" for k in ESTIMATORS), *(f"{k}_std" for k in ESTIMATORS)]
    )
    for i in range(n_actions):
        writer.writerow(
            [
                i,
                int(covered[i]),
                truth[i],
                *(policies[k][:, i].mean() for k in ESTIMATORS),
                *(policies[k][:, i].std() for k in ESTIMATORS),
            ]
        )
    write_text(out_dir / "example2.csv", buffer.getvalue())

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    actions = np.arange(n_actions)
    # SFT and RLHF nearly coincide, so each estimator gets its own line style and marker as well as colour
    styles = {"sft": ("-", "o", 6), "rm": ("-", "s", 3), "rlhf": ("--", "x", 5), "aihf": ("-", ".", 4)}
    for key in ESTIMATORS:
        mean, std = policies[key].mean(axis=0), policies[key].std(axis=0)
        linestyle, marker, size = styles[key]
        ax.plot(
            actions,
            mean,
            linestyle=linestyle,
            marker=marker,
            markersize=size,
            fillstyle="none",
            color=COLORS[key],
            label=LABELS[key],
        )
        ax.fill_between(actions, mean - std, mean + std, color=COLORS[key], alpha=0.15)
    ax.plot(actions, truth, color="black", linestyle=":", label="ground truth")
    ax.axvline(n_covered - 0.5, color="tab:red", linestyle=":", label="demonstration coverage ends")
    ax.set_xlabel("action")
    ax.set_ylabel("probability (mean ± std over repeats)")
    ax.set_title(f"Example 2: policies with demonstrations covering actions 0..{n_covered - 1}")
    ax.legend(fontsize=8)
    report.plots.append(_save(fig, out_dir / "example2.png"))
    return report


# -------------------------------------------------------------------------------------------- Sweep


def sweep(
    out_dir: Path,
    demo_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000),
    pref_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000),
    repeats: int = 50,
    n_actions: int = 10,
    seed: int = 0,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> Report:
    """Mean total-variation distance to the true policy of each estimator over a grid of |D| x |P|.

    Truth: rewards r ~ N(0, 1) for `n_actions` actions (drawn once from `seed`); demonstrations are
    multinomial from softmax(r / beta), preferences are BTL comparisons of uniformly random pairs.
    """
    rng = np.random.default_rng(seed)
    reward = rng.normal(size=n_actions)
    truth = true_policy(reward, beta)
    error = np.zeros((len(ESTIMATORS), len(demo_sizes), len(pref_sizes), repeats))
    for a, n_demos in enumerate(demo_sizes):
        for b, n_prefs in enumerate(pref_sizes):
            for rep in range(repeats):
                demos = sample_demonstrations(reward, n_demos, rng, beta)
                prefs = sample_preferences(reward, rng, beta, n_prefs=n_prefs)
                policies = estimate_all(ChoiceData(demos, prefs), beta, alpha).policies()
                for k, key in enumerate(ESTIMATORS):
                    error[k, a, b, rep] = total_variation(policies[key], truth)
    mean = error.mean(axis=-1)
    rows = []
    for a, n_demos in enumerate(demo_sizes):
        for b, n_prefs in enumerate(pref_sizes):
            best = ESTIMATORS[int(np.argmin(mean[:, a, b]))]
            rows.append(
                [n_demos, n_prefs, *(float(mean[k, a, b]) for k in range(len(ESTIMATORS))), LABELS[best]]
            )
    aihf_best = sum(row[-1] == "AIHF" for row in rows)
    report = Report(
        f"Data-ratio sweep: mean TV distance to the truth ({n_actions} actions, {repeats} repeats per cell)",
        ["|D|", "|P|", "SFT", "RM only", "RLHF", "AIHF", "best"],
        rows,
        notes=[f"AIHF has the lowest mean error in {aihf_best} of {len(rows)} cells."],
    )
    write_json(
        out_dir / "sweep.json",
        {
            "beta": beta,
            "alpha": alpha,
            "seed": seed,
            "repeats": repeats,
            "true_reward": reward.tolist(),
            "demo_sizes": list(demo_sizes),
            "pref_sizes": list(pref_sizes),
            "tv_mean": {key: mean[k].tolist() for k, key in enumerate(ESTIMATORS)},
            "tv_std": {key: error[k].std(axis=-1).tolist() for k, key in enumerate(ESTIMATORS)},
        },
    )
    write_text(out_dir / "sweep.csv", report.csv_text())

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ESTIMATORS), figsize=(3.2 * len(ESTIMATORS), 3.2), sharey=True)
    vmin, vmax = float(mean.min()), float(mean.max())
    for k, (ax, key) in enumerate(zip(axes, ESTIMATORS)):
        image = ax.imshow(mean[k], origin="lower", cmap="viridis_r", vmin=vmin, vmax=vmax)
        for a in range(len(demo_sizes)):
            for b in range(len(pref_sizes)):
                shade = image.cmap(image.norm(mean[k, a, b]))  # dark text on light cells, white on dark
                colour = "black" if 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5 else "white"
                ax.text(b, a, f"{mean[k, a, b]:.2f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(LABELS[key])
        ax.set_xticks(range(len(pref_sizes)), [str(s) for s in pref_sizes], fontsize=7)
        ax.set_xlabel("|P| (comparisons)")
    axes[0].set_yticks(range(len(demo_sizes)), [str(s) for s in demo_sizes], fontsize=7)
    axes[0].set_ylabel("|D| (demonstrations)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="mean TV to truth")
    fig.suptitle("Error of each estimator as the amounts of demonstrations and preferences vary")
    report.plots.append(_save(fig, out_dir / "sweep.png"))
    return report
