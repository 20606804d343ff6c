"""The report toolkit: seeds aggregated, pairs of methods tested, numbers and tables written.

Seeds are a sample, so spreads use ddof = 1. With three seeds per arm a normal "2 s.e." rule
overstates what is known: Welch's t has about 2-4 degrees of freedom there, so pairs are decided
by Welch's t with its df (scipy) or by an exact permutation test, with Holm over a family of claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


def sd(values: Sequence[float] | Any) -> float:  # Any: numpy arrays and CPU tensors too
    """Sample standard deviation (ddof = 1: seeds and samples are samples) of a sequence, array or CPU
    tensor, in float64; 0 for one value."""
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1)) if len(values) > 1 else 0.0


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
    permutation p (two-sided, every relabelling of the pooled seeds)."""

    diff: float
    se: float
    t: float
    df: float
    p_welch: float
    p_perm: float
    n: tuple[int, int]


def pair_test(a: Sequence[float], b: Sequence[float]) -> PairTest:
    """Welch's t test (unequal variances, Welch-Satterthwaite df) and the exact permutation test of
    the difference in means; NaN where an arm has fewer than 2 values or both arms are constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    n = (len(x), len(y))
    if min(n) < 2:
        return PairTest(diff, math.nan, math.nan, math.nan, math.nan, math.nan, n)
    se = float(math.sqrt(x.var(ddof=1) / n[0] + y.var(ddof=1) / n[1]))
    if se == 0.0:
        return PairTest(diff, se, math.nan, math.nan, math.nan, math.nan, n)
    welch = stats.ttest_ind(x, y, equal_var=False)
    perm = stats.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        permutation_type="independent",
        n_resamples=np.inf,  # exact: every split of the pooled values
        alternative="two-sided",
        vectorized=True,
    )
    return PairTest(
        diff, se, float(welch.statistic), float(welch.df), float(welch.pvalue), float(perm.pvalue), n
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
