"""Inverse Preference Learning (Hejna & Sadigh, NeurIPS 2023) on stable-baselines3's SAC, online.

IPL learns no reward network. Any Q-function implies a reward through the inverse Bellman operator,

    r_Q(s, a) = Q(s, a) - gamma * (1 - done) * V(s'),
    V(s') = E_{a' ~ pi}[Q_target(s', a') - ent_coef * log pi(a'|s')],

so the critic is fit directly to the preferences: Bradley-Terry on the segment sums of r_Q, plus the
authors' chi^2 regulariser 1 / (4 c) * mean r_Q^2 over the preference transitions and a replay batch
(it keeps the implied reward small where there are no labels, as their online SAC variant does).
The actor and the entropy coefficient are updated exactly as in SAC. The replay buffer's rewards are
never read. Set-up here (README.md): the same preference pairs as every other method, no
demonstrations, a random initial policy, online interaction for the same number of SAC steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.utils import polyak_update

from aihf.control.reward_learning import PreferenceTensors, segment_rows, sum_segments


class IPLSAC(SAC):
    """SAC whose critic learns from preference pairs through its implicit reward (see module doc)."""

    def set_preferences(self, prefs: PreferenceTensors, cfg: Any) -> None:
        """The preference data and IPL's settings; not saved with the model (the run reloads them)."""
        device = self.device
        trans = prefs.trans
        scaled = np.clip(self.policy.scale_action(trans.act.numpy()), -1.0, 1.0)
        self._ipl = {
            "obs": trans.obs.to(device),
            "act": torch.as_tensor(scaled, dtype=torch.float32, device=device),
            "next_obs": trans.next_obs.to(device),
            "done": trans.done.to(device),
            "starts": prefs.starts,
            "segments": prefs.segments,
            "labels": prefs.labels.to(device),
            "pairs": cfg.ipl_pref_batch_size,
            "chi2": cfg.ipl_chi2_coef,
            "bootstrap": cfg.termination == "bootstrap",
        }

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_ipl"]

    def _implicit_rewards(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, done: torch.Tensor, ent_coef
    ) -> list[torch.Tensor]:
        """r_Q for each critic head (gradients flow into the critic only)."""
        with torch.no_grad():
            next_act, next_log_prob = self.actor.action_log_prob(next_obs)
            next_q = torch.cat(self.critic_target(next_obs, next_act), dim=1).min(dim=1, keepdim=True).values
            next_v = next_q - ent_coef * next_log_prob.reshape(-1, 1)
            discount = self.gamma * (1 - done.reshape(-1, 1))
        return [q - discount * next_v for q in self.critic(obs, act)]

    def _critic_loss(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
        ent_coef: torch.Tensor,
        seg_id: np.ndarray,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IPL's critic loss, its preference term and its chi^2 term, each averaged over the critic heads.
        The first `len(seg_id)` rows are the sampled pairs' transitions (`segment_rows` order), the rest
        a replay batch; a method of its own so that tests can hold the sbx port against it."""
        pref_loss = chi2 = torch.zeros((), device=self.device)
        heads = self._implicit_rewards(obs, act, next_obs, done, ent_coef)
        for reward in heads:
            ret_a, ret_b = sum_segments(reward[: len(seg_id), 0], seg_id, len(labels))
            pref_loss = pref_loss + F.binary_cross_entropy_with_logits(ret_a - ret_b, labels)
            chi2 = chi2 + reward.pow(2).mean() / (4 * self._ipl["chi2"])
        return (pref_loss + chi2) / len(heads), pref_loss / len(heads), chi2 / len(heads)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        data = self._ipl
        n_pairs = data["pairs"]
        logs: dict[str, list[float]] = {
            "critic_loss": [],
            "preference_loss": [],
            "chi2": [],
            "actor_loss": [],
        }
        for step in range(gradient_steps):
            replay = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            pick = torch.randint(len(data["segments"]), (n_pairs,)).numpy()
            rows, seg_id = segment_rows(data["starts"], data["segments"][pick])
            rows_t = torch.as_tensor(rows, device=self.device)
            replay_done = torch.zeros_like(replay.dones) if data["bootstrap"] else replay.dones
            obs = torch.cat([data["obs"][rows_t], replay.observations])
            act = torch.cat([data["act"][rows_t], replay.actions])
            next_obs = torch.cat([data["next_obs"][rows_t], replay.next_observations])
            done = torch.cat([data["done"][rows_t], replay_done.reshape(-1)])

            actions_pi, log_prob = self.actor.action_log_prob(replay.observations)
            log_prob = log_prob.reshape(-1, 1)
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = torch.exp(self.log_ent_coef.detach())
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
            else:
                ent_coef = self.ent_coef_tensor

            labels = data["labels"][torch.as_tensor(pick, device=self.device)]
            critic_loss, pref_loss, chi2 = self._critic_loss(
                obs, act, next_obs, done, ent_coef, seg_id, labels
            )
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            q_pi = (
                torch.cat(self.critic(replay.observations, actions_pi), dim=1).min(dim=1, keepdim=True).values
            )
            actor_loss = (ent_coef * log_prob - q_pi).mean()
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            if step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            for key, value in zip(logs, (critic_loss, pref_loss, chi2, actor_loss)):
                logs[key].append(value.item())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", float(ent_coef))
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
