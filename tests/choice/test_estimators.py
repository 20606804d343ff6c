import numpy as np
import pytest
import torch

from aihf import losses
from aihf.choice.data import ChoiceData, make_data
from aihf.choice.estimators import (
    aihf_objective,
    aihf_reward,
    btl_reward,
    estimate_all,
    rlhf_policy,
    sft_policy,
)
from aihf.choice.sampling import sample_demonstrations, sample_preferences
from aihf.errors import InputError


def _random_instance(rng, n_actions, per_pair=5, n_demos=200, full_support=True):
    reward = rng.normal(size=n_actions)
    demos = sample_demonstrations(reward, n_demos, rng)
    if full_support:
        demos += 1  # every action demonstrated: the AIHF optimum is finite
    prefs = sample_preferences(reward, rng, per_pair=per_pair)
    return demos, prefs


def _paper_foc(reward, demos, prefs, beta, alpha, prior=None):
    """alpha n_i + sum_j w_ij - alpha |D| pi_i - sum_j |P_ij| sigmoid((r_i - r_j)/beta), over beta."""
    logits = reward / beta + (np.log(prior) if prior is not None else 0.0)
    pi = np.exp(logits - logits.max())
    pi /= pi.sum()
    sig = 1 / (1 + np.exp(-(reward[:, None] - reward[None, :]) / beta))
    foc = alpha * demos + prefs.sum(1) - alpha * demos.sum() * pi - ((prefs + prefs.T) * sig).sum(1)
    return foc / beta


@pytest.mark.parametrize("seed", range(6))
def test_first_order_conditions_on_random_instances(seed):
    rng = np.random.default_rng(seed)
    n_actions = int(rng.integers(2, 30))
    demos, prefs = _random_instance(rng, n_actions)
    beta, alpha = float(rng.uniform(0.2, 3)), float(rng.uniform(0, 3))
    prior = rng.dirichlet(np.ones(n_actions)) if seed % 2 else None
    fit = aihf_reward(demos, prefs, beta, alpha, prior)
    assert fit.ridge == 0.0
    assert fit.residual < 1e-9
    assert np.abs(_paper_foc(fit.reward, demos, prefs, beta, alpha, prior)).max() < 1e-9
    rm = btl_reward(prefs, beta)
    assert rm.ridge == 0.0
    assert np.abs(_paper_foc(rm.reward, demos, prefs, beta, 0.0)).max() < 1e-9
    # it is the maximum: random perturbations never do better
    best = aihf_objective(fit.reward, demos, prefs, beta, alpha, prior)
    for _ in range(20):
        other = fit.reward + 1e-3 * rng.normal(size=n_actions)
        assert aihf_objective(other, demos, prefs, beta, alpha, prior) < best


def test_paper_fixed_point_form_uniform_prior():
    """pi_i = (n_i + sum_j w_ij) / (|D| + sum_j |P_ij| / (pi_i + pi_j)), METHOD.md section 6."""
    demos, prefs = _random_instance(np.random.default_rng(7), 12)
    pi = aihf_reward(demos, prefs, beta=1.0).policy
    rhs = (demos + prefs.sum(1)) / (demos.sum() + ((prefs + prefs.T) / (pi[:, None] + pi[None, :])).sum(1))
    np.testing.assert_allclose(pi, rhs, rtol=1e-10)


def test_shift_invariance_and_mean_zero_reward():
    rng = np.random.default_rng(1)
    demos, prefs = _random_instance(rng, 8)
    reward = rng.normal(size=8)
    value = aihf_objective(reward, demos, prefs, 0.7, 1.3)
    assert aihf_objective(reward + 5.0, demos, prefs, 0.7, 1.3) == pytest.approx(value, rel=1e-12)
    fit = aihf_reward(demos, prefs, 0.7, 1.3)
    assert abs(fit.reward.mean()) < 1e-12
    # a prior multiplies the policy; a constant factor in it changes nothing
    prior = rng.dirichlet(np.ones(8))
    assert aihf_objective(reward, demos, prefs, 0.7, 1.3, prior) == pytest.approx(
        aihf_objective(reward + 2.0, demos, prefs, 0.7, 1.3, prior), rel=1e-12
    )


def test_beta_only_rescales_the_reward():
    demos, prefs = _random_instance(np.random.default_rng(2), 6)
    one, two = aihf_reward(demos, prefs, 1.0), aihf_reward(demos, prefs, 2.5)
    np.testing.assert_allclose(two.reward, 2.5 * one.reward, atol=1e-10)
    np.testing.assert_allclose(two.policy, one.policy, atol=1e-12)


@pytest.mark.parametrize("undemonstrated", [False, True])
def test_aihf_with_alpha_zero_and_sft_prior_is_rlhf(undemonstrated):
    rng = np.random.default_rng(3)
    demos, prefs = _random_instance(rng, 10, full_support=False)
    if undemonstrated:
        demos[[2, 7]] = 0
    data = make_data(demos, prefs)
    est = estimate_all(data, beta=0.8)
    aihf = aihf_reward(demos, prefs, 0.8, alpha=0.0, prior=sft_policy(demos))
    np.testing.assert_allclose(aihf.policy, est.rlhf, atol=1e-12)
    assert not undemonstrated or np.all(est.rlhf[[2, 7]] == 0)


@pytest.mark.parametrize("seed", range(4))
def test_two_actions_aihf_is_the_pooled_estimate(seed):
    rng = np.random.default_rng(seed)
    n1, n2, w12, w21 = (int(v) for v in rng.integers(1, 60, size=4))
    beta, alpha = float(rng.uniform(0.3, 3)), float(rng.uniform(0.2, 2))
    est = estimate_all(make_data([n1, n2], [[0, w12], [w21, 0]]), beta, alpha)
    pooled = (alpha * n1 + w12) / (alpha * (n1 + n2) + w12 + w21)
    assert est.aihf.policy[0] == pytest.approx(pooled, abs=1e-12)
    assert est.rm.policy[0] == pytest.approx(w12 / (w12 + w21), abs=1e-12)
    assert est.sft[0] == n1 / (n1 + n2)
    odds = (n1 / n2) * (w12 / w21)
    assert est.rlhf[0] == pytest.approx(odds / (1 + odds), abs=1e-12)


def test_example1_values():
    first = estimate_all(make_data([50, 50], [[0, 6], [4, 0]])).policies()
    second = estimate_all(make_data([6, 4], [[0, 50], [50, 0]])).policies()
    assert [first[k][0] for k in ("sft", "rm", "rlhf")] == pytest.approx([0.5, 0.6, 0.6], abs=1e-12)
    assert [second[k][0] for k in ("sft", "rm", "rlhf")] == pytest.approx([0.6, 0.5, 0.6], abs=1e-12)
    assert first["aihf"][0] == pytest.approx(56 / 110, abs=1e-12)
    assert second["aihf"][0] == pytest.approx(56 / 110, abs=1e-12)


def test_degenerate_data_give_finite_answers():
    # action 2 is never demonstrated and only ever loses; action 3 is never compared nor demonstrated;
    # the comparison graph {0, 1, 2} + {3} is disconnected.
    demos = np.array([5, 3, 0, 0])
    prefs = np.array([[0, 2, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    est = estimate_all(make_data(demos, prefs))
    for fit in (est.rm, est.aihf):
        assert np.all(np.isfinite(fit.reward)) and np.all(np.isfinite(fit.policy))
        assert fit.ridge > 0 and fit.residual < 1e-9
        assert fit.policy.sum() == pytest.approx(1.0)
    assert est.aihf.policy[2] < 1e-6 and est.aihf.policy[3] < 1e-6  # the limit puts no mass there
    assert np.all(np.isfinite(est.rlhf)) and est.rlhf[2] == est.rlhf[3] == 0
    # the isolated action's reward is the mean of its own component: zero
    assert est.rm.reward[3] == pytest.approx(0.0, abs=1e-6)


def test_disconnected_components_and_no_preferences():
    prefs = np.zeros((4, 4), int)
    prefs[0, 1], prefs[1, 0], prefs[2, 3], prefs[3, 2] = 3, 1, 2, 2
    rm = btl_reward(prefs, 1.0)
    assert rm.ridge > 0 and np.all(np.isfinite(rm.reward))
    # within each piece the BTL estimate, pieces at equal mean reward
    assert rm.reward[0] - rm.reward[1] == pytest.approx(np.log(3), rel=1e-6)
    assert rm.reward[0] + rm.reward[1] == pytest.approx(0, abs=1e-6)
    assert rm.reward[2] == pytest.approx(rm.reward[3], abs=1e-6)
    # no preferences at all: the RM policy is uniform and RLHF is SFT; AIHF with data on every action too
    est = estimate_all(make_data([4, 1, 3, 2]))
    np.testing.assert_allclose(est.rm.policy, 0.25, atol=1e-12)
    np.testing.assert_allclose(est.rlhf, est.sft, atol=1e-12)
    np.testing.assert_allclose(est.aihf.policy, est.sft, atol=1e-9)


def test_rlhf_is_sft_times_exp_reward():
    demos, prefs = _random_instance(np.random.default_rng(4), 7)
    rm = btl_reward(prefs, 0.5)
    expected = sft_policy(demos) * np.exp(rm.reward / 0.5)
    np.testing.assert_allclose(rlhf_policy(demos, rm.reward, 0.5), expected / expected.sum(), rtol=1e-12)


def _torch_objective(r, demos, prefs, beta, alpha):
    """The AIHF objective written with aihf.losses: |P| times minus the mean Bradley-Terry loss (margin
    scale 1/beta) over one entry per comparison, plus alpha * sum_i n_i log softmax(r / beta)_i."""
    winners, losers = np.nonzero(prefs)
    counts = prefs[winners, losers]
    chosen = r[torch.as_tensor(np.repeat(winners, counts))]
    rejected = r[torch.as_tensor(np.repeat(losers, counts))]
    preference = -int(counts.sum()) * losses.bradley_terry_loss(chosen, rejected, margin_scale=1 / beta)
    demonstration = alpha * (torch.as_tensor(demos, dtype=r.dtype) * torch.log_softmax(r / beta, 0)).sum()
    return demonstration, preference


def test_objective_and_gradient_match_the_shared_torch_losses():
    rng = np.random.default_rng(5)
    n_actions, beta, alpha = 6, 0.7, 1.4
    demos, prefs = _random_instance(rng, n_actions)
    reward = rng.normal(size=n_actions)

    r = torch.tensor(reward, requires_grad=True)
    demonstration, preference = _torch_objective(r, demos, prefs, beta, alpha)
    (demonstration + preference).backward()
    assert (demonstration + preference).item() == pytest.approx(
        aihf_objective(reward, demos, prefs, beta, alpha), rel=1e-12
    )
    np.testing.assert_allclose(r.grad.numpy(), _paper_foc(reward, demos, prefs, beta, alpha), atol=1e-10)

    # Lemma 5.1: grad of sum_i n_i log pi_i = (|D| / beta) (E_D[grad r] - E_pi[grad r]), i.e. minus
    # |D| / beta times the gradient of the linear demonstration_loss with agent weights pi.
    r_demo = torch.tensor(reward, requires_grad=True)
    _torch_objective(r_demo, demos, prefs, beta, alpha)[0].backward()
    r_lemma = torch.tensor(reward, requires_grad=True)
    pi = torch.softmax(r_lemma / beta, 0).detach()
    weights = torch.as_tensor(demos, dtype=torch.float64)
    lemma = losses.demonstration_loss(r_lemma, r_lemma, "linear", demo_weights=weights, agent_weights=pi)
    (-(alpha * demos.sum() / beta) * lemma).backward()
    np.testing.assert_allclose(r_lemma.grad.numpy(), r_demo.grad.numpy(), atol=1e-10)

    # at the AIHF solution the autograd gradient vanishes
    solved = torch.tensor(aihf_reward(demos, prefs, beta, alpha).reward, requires_grad=True)
    sum(_torch_objective(solved, demos, prefs, beta, alpha)).backward()
    assert solved.grad.abs().max().item() < 1e-9


def test_large_dense_problem_converges():
    rng = np.random.default_rng(6)
    demos, prefs = _random_instance(rng, 300, per_pair=3, n_demos=3000)
    fit = aihf_reward(demos, prefs, 1.0)
    assert fit.ridge == 0.0 and fit.residual < 1e-9 and fit.iterations < 30


def test_choice_data_properties():
    data = ChoiceData(np.array([1, 2]), np.array([[0, 3], [1, 0]]))
    assert (data.n_actions, data.n_demos, data.n_prefs) == (2, 3, 4)


def test_library_calls_reject_bad_parameters():
    demos, prefs = np.array([2, 3]), np.array([[0, 1], [2, 0]])
    with pytest.raises(InputError, match="beta"):
        aihf_reward(demos, prefs, beta=0.0)
    with pytest.raises(InputError, match="alpha"):
        aihf_reward(demos, prefs, beta=1.0, alpha=-1.0)
    with pytest.raises(InputError, match="probability 0"):
        aihf_reward(demos, prefs, beta=1.0, prior=np.array([1.0, 0.0]))
    with pytest.raises(InputError, match="prior entries"):
        aihf_reward(demos, prefs, beta=1.0, prior=np.array([0.2, 0.3, 0.5]))
