"""Exact estimators of the discrete-choice analysis (METHOD.md section 6; paper v1 section 4).

N actions, KL weight beta, policy pi_i(r) ∝ pi0_i exp(r_i / beta) (uniform pi0 unless a prior is given).
From demonstration counts n_i and preference counts w_ij (i preferred over j):

- SFT:   pi_SFT = n / |D|.
- RM:    the preference-only reward r_P = argmax sum_ij w_ij log sigmoid((r_i - r_j) / beta) (BTL MLE);
         its policy alone is softmax(r_P / beta).
- RLHF:  pi_RLHF ∝ pi_SFT exp(r_P / beta): the KL-regularised optimum around SFT, so actions never
         demonstrated keep probability exactly 0.
- AIHF:  r_AIHF = argmax alpha * sum_i n_i log pi_i(r) + sum_ij w_ij log sigmoid((r_i - r_j) / beta),
         the joint problem; its policy is pi(r_AIHF). With alpha = 0 and pi0 = pi_SFT this is RLHF.

Both reward problems are concave; they are solved by Newton's method with backtracking line search
on the analytic gradient and Hessian, in the variable s = r / beta. The reward is identified up to a
shift, which is fixed by making it mean-zero (r.mean() == 0). `Fit.residual` is the first-order
condition residual max_i |dL/dr_i| in count units (the paper's form is
alpha * n_i + sum_j w_ij = alpha * |D| pi_i + sum_j (w_ij + w_ji) sigmoid((r_i - r_j) / beta)).
Double precision puts a floor of about 1e-16 * (alpha |D| + |P|) / beta under it: typically 1e-12 or
less, near 1e-8 only for extreme settings such as alpha = 1000 with beta = 0.01.

Degenerate data, handled deliberately. A finite, unique maximiser (up to the shift) exists exactly
when the directed graph below is strongly connected: an edge i -> j whenever i was preferred over j,
and, if alpha |D| > 0, an extra node z with edges i -> z for every demonstrated action and z -> k for
every action with positive prior. Otherwise (an action never demonstrated that never beat a
demonstrated one; a comparison graph in pieces; an action that wins every comparison; no preferences
at all for the RM) the supremum lies at infinity or is attained on a whole set. Then, and only then,
a ridge (ridge / 2) * ||r / beta||^2 with ridge = 1e-8 * (alpha |D| + |P|) is subtracted: the
solution is finite, never NaN, close to the limit of the unregularised problem (actions pushed to
-infinity get probability ~1e-7 or less), and pieces of a disconnected comparison graph get equal
mean reward. `Fit.ridge` says which case applied; the residual is that of the problem solved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

from aihf.choice.data import ChoiceData
from aihf.errors import InputError

RIDGE = 1e-8  # relative to the total weighted count alpha |D| + |P|; used only for degenerate data
TOL = 1e-12  # target first-order-condition residual (count units); reported either way


@dataclass(frozen=True)
class Fit:
    """A solved reward problem: mean-zero reward, its policy, and how well it was solved."""

    reward: np.ndarray
    policy: np.ndarray
    residual: float  # max_i |dL/dr_i| at the returned reward
    iterations: int
    ridge: float  # 0.0 when the data identify a finite unique optimum


@dataclass(frozen=True)
class Estimates:
    """All four estimators on one data set."""

    sft: np.ndarray
    rm: Fit  # preference-only reward and its policy softmax(r_P / beta)
    rlhf: np.ndarray
    aihf: Fit

    def policies(self) -> dict[str, list[float]]:
        return {
            "sft": self.sft.tolist(),
            "rm": self.rm.policy.tolist(),
            "rlhf": self.rlhf.tolist(),
            "aihf": self.aihf.policy.tolist(),
        }


def sft_policy(demo_counts: np.ndarray) -> np.ndarray:
    return demo_counts / demo_counts.sum()


def btl_reward(pref_counts: np.ndarray, beta: float) -> Fit:
    """Preference-only reward (BTL maximum likelihood); its policy is softmax(r_P / beta)."""
    return aihf_reward(np.zeros(len(pref_counts)), pref_counts, beta, alpha=0.0)


def rlhf_policy(demo_counts: np.ndarray, rm_reward: np.ndarray, beta: float) -> np.ndarray:
    """pi_SFT * exp(r_P / beta), normalised: log pi_SFT + r_P / beta through a softmax."""
    with np.errstate(divide="ignore"):
        logits = np.log(sft_policy(demo_counts)) + rm_reward / beta
    return np.exp(logits - _logsumexp(logits))


def estimate_all(data: ChoiceData, beta: float = 1.0, alpha: float = 1.0) -> Estimates:
    """SFT, RM, RLHF and AIHF on one data set."""
    rm = btl_reward(data.pref_counts, beta)
    return Estimates(
        sft=sft_policy(data.demo_counts),
        rm=rm,
        rlhf=rlhf_policy(data.demo_counts, rm.reward, beta),
        aihf=aihf_reward(data.demo_counts, data.pref_counts, beta, alpha, data.prior),
    )


def aihf_objective(
    reward: np.ndarray,
    demo_counts: np.ndarray,
    pref_counts: np.ndarray,
    beta: float,
    alpha: float,
    prior: np.ndarray | None = None,
) -> float:
    """L(r) = alpha * sum_i n_i log pi_i(r) + sum_ij w_ij log sigmoid((r_i - r_j) / beta)."""
    problem = _Problem(alpha * np.asarray(demo_counts, float), pref_counts, _log_prior(prior, len(reward)), 0)
    return problem.value(np.asarray(reward, float) / beta)


def aihf_reward(
    demo_counts: np.ndarray,
    pref_counts: np.ndarray,
    beta: float,
    alpha: float = 1.0,
    prior: np.ndarray | None = None,
    tol: float = TOL,
    max_iter: int = 200,
) -> Fit:
    """Maximise the AIHF objective (alpha = 0: the BTL problem with policy pi0 exp(r / beta))."""
    if not (0 < beta < np.inf and 0 <= alpha < np.inf):
        raise InputError(f"need beta > 0 and alpha >= 0, got beta={beta}, alpha={alpha}")
    n_actions = len(demo_counts)
    weights = alpha * np.asarray(demo_counts, float)
    prefs = np.asarray(pref_counts, float)
    log_prior = _log_prior(prior, n_actions)
    if prefs.shape != (n_actions, n_actions) or log_prior.shape != (n_actions,):
        raise InputError(f"need {n_actions} x {n_actions} preference counts and {n_actions} prior entries")
    if np.any(np.isneginf(log_prior) & (weights > 0)):
        raise InputError("the prior gives probability 0 to a demonstrated action")
    ridge = 0.0
    if not _identified(weights > 0, prefs > 0, np.isfinite(log_prior)):
        ridge = RIDGE * float(max(weights.sum() + prefs.sum(), 1.0))
    problem = _Problem(weights, prefs, log_prior, ridge)
    s, iterations = _newton(problem, tol * beta, max_iter)
    s -= s.mean()
    residual = float(np.abs(problem.gradient(s)).max()) / beta
    return Fit(beta * s, problem.policy(s), residual, iterations, ridge)


def _logsumexp(x: np.ndarray) -> float:
    """log sum exp(x) for a vector with a finite maximum (scipy's version is slow on tiny inputs)."""
    top = x.max()
    return float(top + np.log(np.exp(x - top).sum()))


def _log_prior(prior: np.ndarray | None, n_actions: int) -> np.ndarray:
    if prior is None:
        return np.full(n_actions, -np.log(n_actions))
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(prior, float))


def _identified(demonstrated: np.ndarray, beats: np.ndarray, supported: np.ndarray) -> bool:
    """Strong connectivity of the graph in the module docstring: a finite, unique optimum exists."""
    n = len(demonstrated)
    if demonstrated.any():  # extra node z = n: demonstrated -> z -> supported
        graph = np.zeros((n + 1, n + 1), bool)
        graph[:n, :n] = beats
        graph[:n, n] = demonstrated
        graph[n, :n] = supported
    else:
        graph = beats
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    return n_components == 1


class _Problem:
    """Value, gradient and Hessian of the (ridged) objective in s = r / beta, to maximise.

    The preference term runs over the compared pairs a < b only: with m = w_ab + w_ba comparisons
    and x = s_a - s_b, w_ab log sigmoid(x) + w_ba log sigmoid(-x) = m log sigmoid(x) - w_ba x.
    """

    def __init__(self, weights: np.ndarray, prefs: np.ndarray, log_prior: np.ndarray, ridge: float):
        self.weights, self.log_prior, self.ridge = weights, log_prior, ridge
        self.n_actions = len(weights)
        self.n_demos = weights.sum()
        self.demonstrated = weights > 0
        upper_a, upper_b = np.triu_indices(self.n_actions, k=1)
        compared = (prefs + prefs.T)[upper_a, upper_b] > 0
        self.a, self.b = upper_a[compared], upper_b[compared]
        self.wins_a = prefs[self.a, self.b]  # w_ab: a preferred over b
        self.total = self.wins_a + prefs[self.b, self.a]  # m_ab = |P_ab|
        self.flat_ab = self.a * self.n_actions + self.b  # positions of (a, b) in a flattened N x N matrix

    def policy(self, s: np.ndarray) -> np.ndarray:
        logits = self.log_prior + s
        return np.exp(logits - _logsumexp(logits))

    def value(self, s: np.ndarray) -> float:
        total = -0.5 * self.ridge * float(s @ s)
        if self.n_demos > 0:
            logits = self.log_prior + s
            log_pi = logits[self.demonstrated] - _logsumexp(logits)
            total += float(self.weights[self.demonstrated] @ log_pi)
        x = s[self.a] - s[self.b]
        return total + float(self.total @ log_expit(x) - (self.total - self.wins_a) @ x)

    def _pairs(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of the preference term plus the ridge, and sigmoid(s_a - s_b) per pair."""
        sig = expit(s[self.a] - s[self.b])
        flow = self.wins_a - self.total * sig  # d/ds_a of the pair's term; d/ds_b is its negative
        n = self.n_actions
        grad = np.bincount(self.a, flow, n) - np.bincount(self.b, flow, n) - self.ridge * s
        return grad, sig

    def gradient(self, s: np.ndarray) -> np.ndarray:
        grad, _ = self._pairs(s)
        if self.n_demos > 0:
            grad += self.weights - self.n_demos * self.policy(s)
        return grad

    def newton_step(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, Newton direction) at s; the shift direction is pinned when there is no ridge."""
        n = self.n_actions
        grad, sig = self._pairs(s)
        curvature = self.total * sig * (1 - sig)  # m_ab sigmoid'(s_a - s_b)
        neg_hess = np.zeros((n, n))
        neg_hess.ravel()[self.flat_ab] = -curvature
        neg_hess += neg_hess.T
        diagonal = np.bincount(self.a, curvature, n) + np.bincount(self.b, curvature, n) + self.ridge
        if self.n_demos > 0:
            pi = self.policy(s)
            grad += self.weights - self.n_demos * pi
            neg_hess -= self.n_demos * np.outer(pi, pi)
            diagonal += self.n_demos * pi
        neg_hess.flat[:: n + 1] += diagonal
        if self.ridge == 0:  # L is flat along the all-ones vector and the gradient is orthogonal to it
            neg_hess += np.trace(neg_hess) / n**2
        try:
            direction = cho_solve(cho_factor(neg_hess, check_finite=False), grad, check_finite=False)
        except LinAlgError:
            direction = np.linalg.lstsq(neg_hess, grad, rcond=None)[0]
        return grad, direction


def _newton(problem: _Problem, tol_s: float, max_iter: int) -> tuple[np.ndarray, int]:
    """Damped Newton ascent; plain Newton steps (kept while the gradient shrinks) once the predicted
    gain is below what the line search can resolve in floating point."""
    s = np.zeros(problem.n_actions)
    value = problem.value(s)
    for iteration in range(1, max_iter + 1):
        grad, direction = problem.newton_step(s)
        if np.abs(grad).max() <= tol_s:
            return s, iteration - 1
        gain = float(grad @ direction)  # Newton decrement squared: predicted increase is gain / 2
        if gain <= 1e-10 * (1.0 + abs(value)):
            candidate = s + direction
            if np.abs(problem.gradient(candidate)).max() >= np.abs(grad).max():
                return s, iteration  # at the floating-point floor
            s, value = candidate, problem.value(candidate)
            continue
        step = 1.0
        while step > 1e-12:
            candidate = s + step * direction
            new_value = problem.value(candidate)
            if new_value >= value + 1e-4 * step * gain:
                break
            step *= 0.5
        else:
            return s, iteration  # no ascent possible at floating-point precision
        s, value = candidate, new_value
    return s, max_iter
