"""Synthetic discrete-choice data from a ground-truth reward: multinomial demonstrations from the
softmax policy (optionally restricted to a covered subset of actions) and Bradley-Terry comparisons."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax


def true_policy(reward: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """pi*_i ∝ exp(r_i / beta), the policy the estimators try to recover."""
    return softmax(np.asarray(reward, float) / beta)


def gaussian_bump_reward(n_actions: int = 50, mu: float = 0.5, sigma: float = 2.0) -> np.ndarray:
    """The paper's Example 2 truth: r_i = NormalPDF(i / N; mu, sigma) for actions i = 1..N."""
    x = np.arange(1, n_actions + 1) / n_actions
    return np.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def sample_demonstrations(
    reward: np.ndarray,
    n_demos: int,
    rng: np.random.Generator,
    beta: float = 1.0,
    covered: np.ndarray | None = None,
) -> np.ndarray:
    """Counts n_i of `n_demos` draws from softmax(r / beta), restricted to the `covered` actions
    (boolean mask or indices) when given: uncovered actions are never demonstrated."""
    logits = np.asarray(reward, float) / beta
    if covered is not None:
        mask = np.zeros(len(logits), bool)
        mask[covered] = True
        logits = np.where(mask, logits, -np.inf)
    return rng.multinomial(n_demos, softmax(logits))


def sample_preferences(
    reward: np.ndarray,
    rng: np.random.Generator,
    beta: float = 1.0,
    per_pair: int | None = None,
    n_prefs: int | None = None,
) -> np.ndarray:
    """Bradley-Terry comparison counts w_ij, P(i over j) = sigmoid((r_i - r_j) / beta).

    Either `per_pair` comparisons of every unordered pair (the paper's Example 2), or `n_prefs`
    comparisons of pairs drawn uniformly at random among all unordered pairs.
    """
    if (per_pair is None) == (n_prefs is None):
        raise ValueError("give exactly one of per_pair and n_prefs")
    r = np.asarray(reward, float) / beta
    n = len(r)
    upper_i, upper_j = np.triu_indices(n, k=1)
    if per_pair is not None:
        trials = np.full(len(upper_i), per_pair)
    else:
        trials = rng.multinomial(n_prefs, np.full(len(upper_i), 1.0 / len(upper_i)))
    wins = rng.binomial(trials, expit(r[upper_i] - r[upper_j]))
    prefs = np.zeros((n, n), np.int64)
    prefs[upper_i, upper_j] = wins
    prefs[upper_j, upper_i] = trials - wins
    return prefs


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())
