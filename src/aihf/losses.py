"""The loss core of AIHF, shared by every domain (choice, control, lm).

Conventions: every loss is a quantity to *minimise*; inputs are per-example tensors (rewards or
summed sequence log-probabilities) and the functions return the mean loss unless told otherwise.
Notation follows `METHOD.md`: R is the reward, pi the policy, pi_0 / ref the reference policy,
beta the KL weight, alpha the weight of the demonstration term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DemoForm = Literal["linear", "logistic"]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum()


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    labels: torch.Tensor | None = None,
    margin_scale: float = 1.0,
) -> torch.Tensor:
    """Negative Bradley-Terry log-likelihood, -E[log sigmoid(s * (R_w - R_l))].

    `labels` in [0, 1] gives soft preferences (probability that `chosen` is preferred); the loss is
    then the binary cross-entropy against sigmoid(s * (R_w - R_l)). `margin_scale` s is 1/beta in
    the discrete-choice analysis, where preferences are compared on the policy scale.
    """
    logits = margin_scale * (chosen_rewards - rejected_rewards)
    if labels is None:
        return -F.logsigmoid(logits).mean()
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def demonstration_loss(
    demo_rewards: torch.Tensor,
    agent_rewards: torch.Tensor,
    form: DemoForm = "linear",
    demo_weights: torch.Tensor | None = None,
    agent_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """AIHF's demonstration term, to minimise (its gradient ascends the demonstration likelihood).

    linear   (the paper's definition): -(E_D[R] - E_pi[R]). Its gradient is -beta times the
             gradient of E_D[log pi_theta] when pi_theta is the KL-optimal policy for R (Lemma 5.1),
             so agent samples must come from the *current* policy. Weights give exact or
             importance-weighted expectations.
    logistic (the authors' public scripts): -E[log sigmoid(R(demo_i) - R(agent_i))] over paired
             demonstration / agent samples for the same prompt; bounded, so it cannot diverge.
    """
    if form == "linear":
        return -(_weighted_mean(demo_rewards, demo_weights) - _weighted_mean(agent_rewards, agent_weights))
    if form == "logistic":
        if demo_rewards.shape != agent_rewards.shape:
            raise ValueError(
                "logistic demonstration term pairs each demonstration with an agent sample for the same "
                f"prompt: got shapes {tuple(demo_rewards.shape)} and {tuple(agent_rewards.shape)}"
            )
        return -_weighted_mean(F.logsigmoid(demo_rewards - agent_rewards), demo_weights)
    raise ValueError(f"unknown demonstration form {form!r}: expected 'linear' or 'logistic'")


def discounted_returns(step_rewards: torch.Tensor, lengths: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """sum_t gamma^t r_t of each trajectory, for trajectories stored one after another (`lengths` each).

    The paper's demonstration term (v1, eq. 32-34) compares these per-trajectory sums,
    `demonstration_loss(discounted_returns(demo), discounted_returns(agent))`: its gradient is
    E_D[sum_t gamma^t grad r] - E_pi[sum_t gamma^t grad r]. Unlike the per-transition mean it does not
    cancel a constant reward offset c between trajectories of different lengths: c gets the gradient
    of E_D[sum_{t<T} gamma^t] - E_pi[sum_{t<T} gamma^t], i.e. T_demo - T_agent when gamma = 1.
    """
    lengths = lengths.to(device=step_rewards.device, dtype=torch.long)
    traj = torch.repeat_interleave(torch.arange(len(lengths), device=step_rewards.device), lengths)
    first = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    t = torch.arange(len(step_rewards), device=step_rewards.device) - first
    weights = torch.pow(torch.tensor(gamma, dtype=step_rewards.dtype, device=step_rewards.device), t)
    totals = torch.zeros(len(lengths), dtype=step_rewards.dtype, device=step_rewards.device)
    return totals.index_add(0, traj, weights * step_rewards)


def reward_centering_penalty(rewards: torch.Tensor, coef: float) -> torch.Tensor:
    """coef * E[R^2]: pins the reward's free additive constant (BTL and the demo term are shift-invariant)."""
    return coef * rewards.pow(2).mean()


@dataclass
class RewardLoss:
    """The reward step's loss and its parts, detached parts for logging."""

    loss: torch.Tensor
    demo: torch.Tensor
    preference: torch.Tensor
    centering: torch.Tensor


def aihf_reward_loss(
    *,
    demo_rewards: torch.Tensor | None,
    agent_rewards: torch.Tensor | None,
    chosen_rewards: torch.Tensor | None,
    rejected_rewards: torch.Tensor | None,
    alpha: float = 1.0,
    demo_form: DemoForm = "linear",
    preference_labels: torch.Tensor | None = None,
    centering_coef: float = 0.0,
) -> RewardLoss:
    """Upper-level AIHF objective as a loss: -(alpha * L1 + L2) + centring (METHOD.md section 3).

    Either part may be absent (None): no demonstrations gives preference-only reward learning
    (alpha = 0, the first stage of RLHF); no preferences gives maximum-likelihood IRL.
    """
    zero = torch.zeros(())
    parts: list[torch.Tensor] = []
    demo = preference = centering = zero
    if demo_rewards is not None and agent_rewards is not None and alpha > 0:
        demo = demonstration_loss(demo_rewards, agent_rewards, demo_form)
        parts += [demo_rewards, agent_rewards]
    if chosen_rewards is not None and rejected_rewards is not None:
        preference = bradley_terry_loss(chosen_rewards, rejected_rewards, preference_labels)
        parts += [chosen_rewards, rejected_rewards]
    if not parts:
        raise ValueError("aihf_reward_loss needs demonstrations (with agent samples) or preferences")
    if centering_coef > 0:
        centering = reward_centering_penalty(torch.cat([p.reshape(-1) for p in parts]), centering_coef)
    device = parts[0].device
    loss = alpha * demo.to(device) + preference.to(device) + centering.to(device)
    return RewardLoss(loss, demo.detach(), preference.detach(), centering.detach())


@dataclass
class PairwiseLoss:
    """A DPO-family loss with the implicit rewards beta * log(pi/ref) of both answers."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PairwiseLoss:
    """DPO (sigmoid): -log sigmoid(beta*log pi/ref(y_w) - beta*log pi/ref(y_l)).

    `label_smoothing` eps is conservative DPO: the label is flipped with probability eps.
    """
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    margin = chosen - rejected
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return PairwiseLoss(losses, chosen.detach(), rejected.detach())


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> PairwiseLoss:
    """IPO (Azar et al. 2023): (log-ratio margin - 1/(2 beta))^2, with beta as the regulariser tau.

    Pass length-averaged log-probabilities, as IPO's authors (and TRL) do.
    """
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return PairwiseLoss(losses, (beta * chosen).detach(), (beta * rejected).detach())


def spin_loss(
    policy_real_logps: torch.Tensor,
    policy_generated_logps: torch.Tensor,
    opponent_real_logps: torch.Tensor,
    opponent_generated_logps: torch.Tensor,
    beta: float,
) -> PairwiseLoss:
    """SPIN (Chen et al. 2024) with the logistic loss: demonstration y beats the opponent's own sample y'.

    It is DPO with the previous iterate pi_t as the reference and (y, y') as (chosen, rejected);
    Self-Play AIHF uses it for the demonstration term.
    """
    return dpo_loss(
        policy_real_logps, policy_generated_logps, opponent_real_logps, opponent_generated_logps, beta
    )


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, num_tokens: int | None = None
) -> torch.Tensor:
    """Token-mean negative log-likelihood of next-token prediction (labels aligned with logits' inputs).

    `num_tokens` divides the summed loss instead of this batch's token count: under gradient
    accumulation it is the count over all micro-batches of the step, so the step's update is the
    token mean over the whole batch (transformers' `num_items_in_batch`).
    """
    shifted_logits = logits[..., :-1, :].contiguous()
    shifted_labels = labels[..., 1:].contiguous()
    flat_logits, flat_labels = shifted_logits.view(-1, shifted_logits.size(-1)), shifted_labels.view(-1)
    if num_tokens is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index)
    summed = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    return summed / max(num_tokens, 1)


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, average: bool = False
) -> torch.Tensor:
    """Sum (or mean) over each sequence of log pi(label_t | prefix), skipping `ignore_index` labels.

    `logits` [B, T, V] are the model outputs for inputs whose next tokens are `labels` shifted by one,
    as in `sft_loss`. Returns [B].
    """
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != ignore_index
    safe_labels = shifted_labels.masked_fill(~mask, 0)
    token_logps = torch.gather(shifted_logits.log_softmax(-1), 2, safe_labels.unsqueeze(-1)).squeeze(-1)
    total = (token_logps * mask).sum(-1)
    if average:
        return total / mask.sum(-1).clamp(min=1)
    return total
