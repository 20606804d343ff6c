"""The report toolkit: seeds aggregated, pairs of methods tested, numbers and tables written.

Seeds are a sample, so spreads use ddof = 1. With three seeds per arm a normal "2 s.e." rule
overstates what is known: Welch's t has about 2-4 degrees of freedom there, so pairs are decided
by Welch's t with its df (scipy) or by an exact permutation test (two- or one-sided), with Holm over a
family of claims. Beside the means: the interquartile mean (IQM) with stratified bootstrap confidence
intervals and performance profiles (Agarwal et al. 2021, rliable), robust to one outlying seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats


def sd(values: Sequence[float] | Any) -> float:  # Any: numpy arrays and CPU tensors too
    """Sample standard deviation (ddof = 1: seeds and samples are samples) of a sequence, array or CPU
    tensor, in float64; 0 for one value."""
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1)) if len(values) > 1 else 0.0


def mean_sd(values: Sequence[float] | Any, digits: int = 1) -> str:
    """The mean and sample sd over seeds as "m +- s", or the mean alone for one value (no spread)."""
    mean = f"{np.mean(values):.{digits}f}"
    return mean + (f" +- {sd(values):.{digits}f}" if len(values) > 1 else "")


def fmt(value: float | None, digits: int = 3, missing: str = "–") -> str:
    """`value` to `digits` decimals, or `missing` where it is missing or NaN (a spread of one seed)."""
    return missing if value is None or value != value else f"{value:.{digits}f}"


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float, float]]:
    """(step, mean, sd) over curves at every step all of them evaluated."""
    steps = sorted(set.intersection(*(set(s for s, _ in curve) for curve in curves)))
    rows = []
    for step in steps:
        values = [dict(curve)[step] for curve in curves]
        rows.append((step, float(np.mean(values)), sd(values)))
    return rows


@dataclass(frozen=True)
class PairTest:
    """Two arms' means compared: the difference, Welch's t with its df and p, and the exact
    permutation p (every relabelling of the pooled seeds); `alternative` says which hypothesis the
    p-values test ("greater": the first arm's mean is higher)."""

    diff: float
    se: float
    t: float
    df: float
    p_welch: float
    p_perm: float
    n: tuple[int, int]
    alternative: str = "two-sided"


Alternative = Literal["two-sided", "greater", "less"]


def pair_test(a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided") -> PairTest:
    """Welch's t test (unequal variances, Welch-Satterthwaite df) and the exact permutation test of
    the difference in means, two-sided or one-sided ("greater": mean(a) > mean(b) is the claim); NaN
    where an arm has fewer than 2 values or both arms are constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    n = (len(x), len(y))
    if min(n) < 2:
        return PairTest(diff, math.nan, math.nan, math.nan, math.nan, math.nan, n, alternative)
    se = float(math.sqrt(x.var(ddof=1) / n[0] + y.var(ddof=1) / n[1]))
    if se == 0.0:
        return PairTest(diff, se, math.nan, math.nan, math.nan, math.nan, n, alternative)
    welch = stats.ttest_ind(x, y, equal_var=False, alternative=alternative)
    perm = stats.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        permutation_type="independent",
        n_resamples=np.inf,  # exact: every split of the pooled values
        alternative=alternative,
        vectorized=True,
    )
    return PairTest(
        diff,
        se,
        float(welch.statistic),
        float(welch.df),
        float(welch.pvalue),
        float(perm.pvalue),
        n,
        alternative,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the claims); NaN stays NaN.

    scipy.stats offers only Benjamini-Hochberg (`false_discovery_control`), which controls another
    error rate."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), math.nan)
    order = valid[np.argsort(p[valid])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(a: str, b: str, test: PairTest, p_adjusted: float, level: float = 0.05) -> str:
    """ "A beats B" when the Holm-adjusted p is below `level`, else "undecided"."""
    if test.p_welch != test.p_welch:
        return "undecided (fewer than 2 seeds an arm)" if min(test.n) < 2 else "undecided (no spread)"
    if p_adjusted < level:
        return f"{a if test.diff > 0 else b} beats {b if test.diff > 0 else a}"
    return "undecided"


def decide_claims(
    scores: dict[str, Sequence[float]],
    claims: Sequence[Sequence[str]],
    expected: dict[str, int],
    level: float = 0.05,
) -> list[dict[str, Any]]:
    """One-sided claims [a, b] ("a's mean is higher than b's") decided over their whole family.

    A claim is tested only once both arms hold every seed the protocol plans (`expected`): seeds
    still running could change any verdict, so until then it is "pending" with no test. Holm runs
    over every claim; a pending claim, or one with no test (no spread), enters the family with p = 1.
    That bounds the adjusted p of the others from above (a p that turns out smaller later only moves
    the others to smaller Holm multipliers), so a verdict read while claims are pending stands.
    holds: Holm-adjusted one-sided Welch p < `level`; does not hold: the opposite claim's (b > a) is;
    else undecided."""
    tests = []
    for a, b in claims:
        complete = all(len(scores.get(m, ())) >= expected[m] for m in (a, b))
        tests.append(pair_test(scores[a], scores[b], "greater") if complete else None)

    def family(p: Sequence[float | None]) -> list[float]:
        return holm([1.0 if v is None or v != v else v for v in p])

    welch = family([t.p_welch if t else None for t in tests])
    perm = family([t.p_perm if t else None for t in tests])
    opposite = family([1.0 - t.p_welch if t else None for t in tests])  # b > a: the other tail of t
    decisions = []
    for (a, b), t, pw, pp, po in zip(claims, tests, welch, perm, opposite):
        n = [len(scores.get(m, ())) for m in (a, b)]
        decision: dict[str, Any] = {"claim": [a, b], "n": n, "expected": [expected[a], expected[b]]}
        if t is None:
            decisions.append(decision | {"verdict": "pending"})
            continue
        said = "holds" if t.diff > 0 and pw < level else "does not hold" if po < level else "undecided"
        decisions.append(
            decision
            | {
                "diff": t.diff,
                "t": t.t,
                "df": t.df,
                "p_welch": t.p_welch,
                "p_perm": t.p_perm,
                "p_welch_holm": pw,
                "p_perm_holm": pp,
                "verdict": said,
            }
        )
    return decisions


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> list[str]:
    """Lines of a Markdown table; `align` one character per column ("l" or "r"), default all "---"."""
    rule = ["---:" if c == "r" else "---" for c in align] if align else ["---"] * len(header)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rule) + "|" if align else "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


# ---------------------------------------------------------------------------------------------------
# robust aggregates (rliable)


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean (the mean of the middle 50 % of all runs; rliable's `aggregate_iqm`)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


def stratified_bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    statistic: Any = iqm,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of `statistic` over scores [runs] or [runs, tasks], runs
    resampled with replacement within each task (rliable's stratified bootstrap).

    rliable's own `get_interval_estimates` cannot run here: it passes `random_state` to arch's
    bootstrap, which arch 8 renamed `seed`, and arch 7 does not import under pandas 3; the resampling
    is the same."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    rng = np.random.default_rng(seed)
    runs, tasks = x.shape
    columns = np.arange(tasks)
    values = [float(statistic(x[rng.integers(0, runs, size=(runs, tasks)), columns])) for _ in range(reps)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def performance_profile(
    scores: Sequence[float] | np.ndarray, taus: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The fraction of runs whose score exceeds each tau (per task, then averaged over tasks); it
    never rises as tau grows."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return np.array([float(np.mean(np.mean(x > tau, axis=0))) for tau in taus])


def plot_performance_profiles(
    scores: dict[str, Sequence[float] | np.ndarray],
    taus: Sequence[float] | np.ndarray,
    path: str | Path,
    xlabel: str = "normalised score (tau)",
    reps: int = 2000,
) -> dict[str, np.ndarray]:
    """Each method's performance profile with its stratified bootstrap band, drawn by rliable's
    `plot_performance_profiles` into `path`; returns the profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    taus = np.asarray(taus, dtype=np.float64)
    profiles = {name: performance_profile(x, taus) for name, x in scores.items()}
    bands = {}
    for name, x in scores.items():
        per_tau = [stratified_bootstrap_ci(x, lambda s, t=t: np.mean(s > t), reps) for t in taus]
        bands[name] = np.array(per_tau).T
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=bands, ax=ax, xlabel=xlabel, legend=True
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return profiles
