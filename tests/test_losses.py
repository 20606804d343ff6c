import math

import pytest
import torch

from aihf import losses


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bradley_terry_matches_hand_computation():
    chosen = torch.tensor([1.0, 0.0])
    rejected = torch.tensor([0.0, 2.0])
    expected = -(_logsig(1.0) + _logsig(-2.0)) / 2
    assert losses.bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_soft_labels_and_scale():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    # label 0.25: a quarter of the raters preferred `chosen`; margin scale 1/beta with beta = 0.5.
    loss = losses.bradley_terry_loss(chosen, rejected, labels=torch.tensor([0.25]), margin_scale=2.0)
    expected = -(0.25 * _logsig(2.0) + 0.75 * _logsig(-2.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    hard = losses.bradley_terry_loss(chosen, rejected, labels=torch.tensor([1.0]))
    assert hard.item() == pytest.approx(losses.bradley_terry_loss(chosen, rejected).item(), rel=1e-6)


def test_demonstration_loss_linear_and_logistic():
    demo = torch.tensor([2.0, 1.0, 3.0])
    agent = torch.tensor([0.0, 1.0, -1.0])
    assert losses.demonstration_loss(demo, agent, "linear").item() == pytest.approx(-(2.0 - 0.0))
    expected_logistic = -(_logsig(2.0) + _logsig(0.0) + _logsig(4.0)) / 3
    assert losses.demonstration_loss(demo, agent, "logistic").item() == pytest.approx(
        expected_logistic, rel=1e-6
    )
    weights = torch.tensor([0.5, 0.25, 0.25])
    weighted = losses.demonstration_loss(demo, agent, "linear", agent_weights=weights)
    assert weighted.item() == pytest.approx(-(2.0 - (0.0 * 0.5 + 1.0 * 0.25 - 1.0 * 0.25)))
    with pytest.raises(ValueError, match="pairs each demonstration"):
        losses.demonstration_loss(demo, agent[:2], "logistic")
    with pytest.raises(ValueError, match="unknown demonstration form"):
        losses.demonstration_loss(demo, agent, "quadratic")  # type: ignore[arg-type]


def test_reward_centering_penalty():
    assert losses.reward_centering_penalty(torch.tensor([1.0, -3.0]), 0.1).item() == pytest.approx(0.5)


def test_aihf_reward_loss_combines_parts():
    demo, agent = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    out = losses.aihf_reward_loss(
        demo_rewards=demo,
        agent_rewards=agent,
        chosen_rewards=chosen,
        rejected_rewards=rejected,
        alpha=0.5,
        centering_coef=0.1,
    )
    centering = 0.1 * (1 + 4 + 0 + 0 + 1 + 0) / 6
    expected = 0.5 * -1.5 + -_logsig(1.0) + centering
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.demo.item() == pytest.approx(-1.5)
    # alpha = 0 is preference-only reward learning: the demonstrations do not enter.
    pref_only = losses.aihf_reward_loss(
        demo_rewards=demo, agent_rewards=agent, chosen_rewards=chosen, rejected_rewards=rejected, alpha=0.0
    )
    assert pref_only.loss.item() == pytest.approx(-_logsig(1.0), rel=1e-6)
    with pytest.raises(ValueError, match="needs demonstrations"):
        losses.aihf_reward_loss(
            demo_rewards=None, agent_rewards=None, chosen_rewards=None, rejected_rewards=None
        )


def test_dpo_loss_and_label_smoothing():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    out = losses.dpo_loss(pc, pr, rc, rr, beta=0.1)
    margin = 0.1 * ((-1 + 2) - (-3 + 2))
    assert out.loss.item() == pytest.approx(-_logsig(margin), rel=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)
    smooth = losses.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2)
    assert smooth.loss.item() == pytest.approx(-0.8 * _logsig(margin) - 0.2 * _logsig(-margin), rel=1e-6)


def test_ipo_loss():
    out = losses.ipo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.5
    )
    assert out.loss.item() == pytest.approx((2.0 - 1.0) ** 2)


def test_spin_loss_is_dpo_against_the_previous_iterate():
    real, gen = torch.tensor([-1.0, -2.0]), torch.tensor([-4.0, -1.0])
    opp_real, opp_gen = torch.tensor([-1.5, -2.5]), torch.tensor([-3.0, -1.5])
    spin = losses.spin_loss(real, gen, opp_real, opp_gen, beta=0.2)
    expected = (
        sum(
            -_logsig(0.2 * ((r - orl) - (g - og)))
            for r, g, orl, og in zip([-1.0, -2.0], [-4.0, -1.0], [-1.5, -2.5], [-3.0, -1.5])
        )
        / 2
    )
    assert spin.loss.item() == pytest.approx(expected, rel=1e-6)


def test_sft_loss_and_sequence_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, 3, 4], [0, -100, 2, -100]])
    logp = logits.log_softmax(-1)
    by_hand_0 = logp[0, 0, 2] + logp[0, 1, 3] + logp[0, 2, 4]
    by_hand_1 = logp[1, 1, 2]
    seq = losses.sequence_logprobs(logits, labels)
    assert seq[0].item() == pytest.approx(by_hand_0.item(), rel=1e-5)
    assert seq[1].item() == pytest.approx(by_hand_1.item(), rel=1e-5)
    avg = losses.sequence_logprobs(logits, labels, average=True)
    assert avg[0].item() == pytest.approx(by_hand_0.item() / 3, rel=1e-5)
    nll = losses.sft_loss(logits, labels)
    assert nll.item() == pytest.approx(-(by_hand_0 + by_hand_1).item() / 4, rel=1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0, 2.5])
def test_demonstration_gradient_identity(beta):
    """grad_theta E_D[log pi_theta] = (1/beta)(E_D grad R - E_pi grad R) for pi ∝ pi_0 exp(R_theta/beta)."""
    torch.manual_seed(1)
    n_actions, n_features = 7, 4
    features = torch.randn(n_actions, n_features, dtype=torch.float64)
    log_prior = torch.randn(n_actions, dtype=torch.float64).log_softmax(0)
    theta = torch.randn(n_features, dtype=torch.float64, requires_grad=True)
    demo_actions = torch.tensor([0, 0, 3, 5, 6, 6, 6])

    def reward(t: torch.Tensor) -> torch.Tensor:  # nonlinear in theta, so the identity is not trivial
        return torch.tanh(features @ t) * 2.0

    log_pi = (log_prior + reward(theta) / beta).log_softmax(0)
    (grad_loglik,) = torch.autograd.grad(log_pi[demo_actions].mean(), theta)

    rewards = reward(theta)
    pi = log_pi.exp().detach()
    demo_term = losses.demonstration_loss(rewards[demo_actions], rewards, "linear", agent_weights=pi)
    (grad_demo,) = torch.autograd.grad(demo_term, theta)
    torch.testing.assert_close(grad_loglik, -grad_demo / beta, rtol=1e-10, atol=1e-12)


def test_discounted_returns_sum_each_trajectory():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    got = losses.discounted_returns(rewards, torch.tensor([2, 3]), gamma=0.5)
    torch.testing.assert_close(got, torch.tensor([1.0 + 0.5 * 2.0, 3.0 + 0.5 * 4.0 + 0.25 * 5.0]))


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_a_constant_reward_offset_moves_only_the_trajectory_form(gamma):
    """On an environment that ends episodes early (a fall), the paper's per-trajectory sum gives a
    constant offset c the gradient -(E_D[sum_{t<T} gamma^t] - E_pi[sum_{t<T} gamma^t]) (T_demo - T_agent
    for gamma = 1), a survival signal; the per-transition mean form cancels it."""
    demo_lengths, agent_lengths = torch.tensor([10, 10]), torch.tensor([3, 5, 4])
    base_demo, base_agent = torch.randn(20), torch.randn(12)
    offset = torch.zeros((), requires_grad=True)
    demo, agent = base_demo + offset, base_agent + offset
    trajectory = losses.demonstration_loss(
        losses.discounted_returns(demo, demo_lengths, gamma),
        losses.discounted_returns(agent, agent_lengths, gamma),
    )
    (grad_trajectory,) = torch.autograd.grad(trajectory, offset)
    (grad_mean,) = torch.autograd.grad(losses.demonstration_loss(demo, agent), offset)

    def discounted_length(lengths: torch.Tensor) -> float:
        return float(sum(sum(gamma**t for t in range(int(n))) for n in lengths) / len(lengths))

    expected = -(discounted_length(demo_lengths) - discounted_length(agent_lengths))
    assert grad_trajectory.item() == pytest.approx(expected, rel=1e-5)
    if gamma == 1.0:
        assert grad_trajectory.item() == pytest.approx(-(10 - 4))  # -(T_demo - T_agent)
    assert grad_mean.item() == pytest.approx(0.0, abs=1e-6)
