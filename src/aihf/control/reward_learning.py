"""The reward step: demonstrations, agent samples and preference segments as tensors, and the AIHF
upper-level update on them (`aihf.losses.aihf_reward_loss` plus a per-transition centring term)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer

from aihf.control.config import AIHFControlConfig
from aihf.control.data import Preferences, Trajectories
from aihf.control.reward import RewardNet, buffer_actions_to_env, rescore_replay_buffer
from aihf.errors import InputError
from aihf.losses import aihf_reward_loss, discounted_returns, reward_centering_penalty


class RewardDivergedError(RuntimeError):
    """The learned reward became NaN/inf; the last good checkpoint is left as it was."""


@dataclass
class Transitions:
    obs: torch.Tensor
    act: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor
    lengths: np.ndarray | None = None  # whole trajectories, one after another, of these lengths

    def __len__(self) -> int:
        return len(self.obs)

    def rewards(self, net: RewardNet, rows: np.ndarray | None = None) -> torch.Tensor:
        if rows is None:
            return net(self.obs, self.act, self.next_obs, self.done)
        idx = torch.as_tensor(rows)
        return net(self.obs[idx], self.act[idx], self.next_obs[idx], self.done[idx])


def trajectory_transitions(traj: Trajectories, cfg: AIHFControlConfig, what: str) -> Transitions:
    if traj.next_observations is None:
        if cfg.reward_use_next_obs:
            raise InputError(f"{what}: the reward takes next states but the file has no 'next_observations'")
        next_obs = traj.observations  # unused by the net
    else:
        next_obs = traj.next_observations
    done = traj.terminated if cfg.termination == "env" else np.zeros_like(traj.terminated)
    return Transitions(
        torch.as_tensor(traj.observations),
        torch.as_tensor(traj.actions),
        torch.as_tensor(next_obs),
        torch.as_tensor(done, dtype=torch.float32),
        traj.lengths,
    )


def require_whole_episodes(traj: Trajectories, source: str) -> None:
    """The trajectory demonstration term sums r over whole episodes: each trajectory must end where its
    episode ended (terminated or truncated at its last step), not be a cut piece of one."""
    last = np.cumsum(traj.lengths) - 1
    open_ended = np.flatnonzero(~(traj.terminated[last] | traj.truncated[last]))
    if len(open_ended):
        raise InputError(
            f"{source}: trajectory {open_ended[0]} ends without a terminated or truncated flag; "
            "demo_term 'trajectory' needs whole episodes"
        )


def buffer_transitions(buf: ReplayBuffer, window: int) -> Transitions:
    """The agent's most recent `window` transitions from SAC's replay buffer (its current policy's)."""
    size = buf.buffer_size if buf.full else buf.pos
    window = min(window, size)
    rows = (buf.pos - window + np.arange(window)) % buf.buffer_size
    flat = lambda a: torch.as_tensor(a[rows].reshape(window * buf.n_envs, -1), dtype=torch.float32)  # noqa: E731
    done = (buf.dones[rows] * (1 - buf.timeouts[rows])).reshape(-1)
    actions = torch.as_tensor(buffer_actions_to_env(buf, buf.actions[rows].reshape(window * buf.n_envs, -1)))
    return Transitions(flat(buf.observations), actions, flat(buf.next_observations), torch.as_tensor(done))


def buffer_episodes(buf: ReplayBuffer, window: int, env_steps: int) -> Transitions:
    """The agent's completed episodes, each taken whole from SAC's replay buffer: those that ended within
    its most recent `window` transitions (if none did, the latest one that ended before). The episode
    still running is left out, and so is the oldest one once the buffer has overwritten rows (more than
    its size of `env_steps` taken), since its start may be gone."""
    size = buf.buffer_size if buf.full else buf.pos
    chrono = (buf.pos + np.arange(size)) % buf.buffer_size if buf.full else np.arange(size)
    pieces: list[np.ndarray] = []  # per episode: [its rows; its env column]
    for env in range(buf.n_envs):
        ends = np.flatnonzero(buf.dones[chrono, env] > 0)
        firsts = np.concatenate([[0], ends[:-1] + 1])
        whole = firsts > 0 if env_steps > buf.buffer_size * buf.n_envs else np.ones(len(ends), dtype=bool)
        ends, firsts = ends[whole], firsts[whole]
        recent = ends >= size - window
        if not recent.any() and len(ends):
            recent[-1] = True
        pieces += [
            np.stack([chrono[f : e + 1], np.full(e + 1 - f, env)])
            for f, e in zip(firsts[recent], ends[recent])
        ]
    rows, envs = np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), dtype=np.int64)
    flat = lambda a: a[rows, envs].reshape(len(rows), int(np.prod(a.shape[2:])))  # noqa: E731
    take = lambda a: torch.as_tensor(flat(a), dtype=torch.float32)  # noqa: E731
    done = buf.dones[rows, envs] * (1 - buf.timeouts[rows, envs])
    actions = torch.as_tensor(buffer_actions_to_env(buf, flat(buf.actions)))
    lengths = np.array([p.shape[1] for p in pieces], dtype=np.int64)
    return Transitions(
        take(buf.observations), actions, take(buf.next_observations), torch.as_tensor(done), lengths
    )


def trajectory_rows(lengths: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Flat rows of the trajectories `picks` of a set stored one after another with `lengths`."""
    starts = np.cumsum(lengths) - lengths
    n = lengths[picks]
    return np.repeat(starts[picks], n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)


def segment_rows(starts: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat transition rows of segment a then segment b of each pair, and each row's segment id
    (0..n-1 for the a sides, n..2n-1 for the b sides)."""
    traj = np.concatenate([segments[:, 0], segments[:, 3]])
    begin = starts[traj] + np.concatenate([segments[:, 1], segments[:, 4]])
    lengths = np.concatenate([segments[:, 2] - segments[:, 1], segments[:, 5] - segments[:, 4]])
    seg_id = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(begin, lengths) + offsets, seg_id


def sum_segments(
    step_values: torch.Tensor, seg_id: np.ndarray, n_pairs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step values summed over each segment: (sides a, sides b)."""
    totals = torch.zeros(2 * n_pairs, dtype=step_values.dtype, device=step_values.device)
    totals = totals.index_add(0, torch.as_tensor(seg_id, device=step_values.device), step_values)
    return totals[:n_pairs], totals[n_pairs:]


def segment_returns(
    net: RewardNet, trans: Transitions, starts: np.ndarray, segments: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum of r_theta over segment a and segment b of each pair, and the per-transition rewards,
    in one batched forward pass."""
    rows, seg_id = segment_rows(starts, segments)
    rewards = trans.rewards(net, rows)
    ret_a, ret_b = sum_segments(rewards, seg_id, len(segments))
    return ret_a, ret_b, rewards


@dataclass
class PreferenceTensors:
    trans: Transitions
    starts: np.ndarray
    segments: np.ndarray
    labels: torch.Tensor

    @staticmethod
    def build(prefs: Preferences, cfg: AIHFControlConfig) -> PreferenceTensors:
        return PreferenceTensors(
            trajectory_transitions(prefs.trajectories, cfg, "preferences"),
            prefs.trajectories.starts,
            prefs.segments,
            torch.as_tensor(prefs.labels),
        )

    @torch.no_grad()
    def accuracy(self, net: RewardNet) -> float:
        """Fraction of pairs whose learned order agrees with the label (ties in the label skipped)."""
        keep = (self.labels != 0.5).numpy()
        if not keep.any():
            return float("nan")
        ret_a, ret_b, _ = segment_returns(net, self.trans, self.starts, self.segments[keep])
        return float(((ret_a > ret_b) == (self.labels[keep] > 0.5)).float().mean())


def split_preferences(
    prefs: Preferences | None, cfg: AIHFControlConfig
) -> tuple[PreferenceTensors | None, PreferenceTensors | None]:
    """(training pairs, held-out pairs for diagnostics), as tensors."""
    if prefs is None:
        return None, None
    if cfg.pref_holdout == 0:
        return PreferenceTensors.build(prefs, cfg), None
    train_part, held_part = prefs.split(cfg.pref_holdout, cfg.seed)
    held = PreferenceTensors.build(held_part, cfg) if len(held_part) else None
    return PreferenceTensors.build(train_part, cfg), held


class RewardLearner:
    """The learned reward r_theta with everything its updates use: the net, its Adam optimiser, the
    demonstrations and preference pairs as tensors, and the run's data RNG (shared with BC, so a seeded
    run draws the same batches). The trainer holds one and hands it to the algorithms."""

    def __init__(
        self,
        cfg: AIHFControlConfig,
        obs_dim: int,
        act_dim: int,
        rng: np.random.Generator,
        demos: Trajectories | None = None,
        prefs: PreferenceTensors | None = None,
        held_out: PreferenceTensors | None = None,
    ) -> None:
        self.cfg, self.rng = cfg, rng
        self.net = RewardNet(
            obs_dim, act_dim, cfg.reward_hidden, cfg.reward_use_next_obs, cfg.reward_use_done
        )
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=cfg.reward_lr, weight_decay=cfg.reward_weight_decay
        )
        if demos is not None and cfg.demo_term == "trajectory":
            require_whole_episodes(demos, "demonstrations")
        self.demos = trajectory_transitions(demos, cfg, "demonstrations") if demos is not None else None
        self.prefs, self.held_out = prefs, held_out

    def agent_samples(self, buffer: ReplayBuffer, env_steps: int) -> Transitions:
        """The agent's side of the demonstration term, from SAC's replay buffer after `env_steps`
        environment steps: its latest transitions (demo_term 'mean') or its latest completed episodes
        (demo_term 'trajectory')."""
        window = self.cfg.agent_window or self.cfg.steps_per_iter
        if self.cfg.demo_term == "trajectory":
            return buffer_episodes(buffer, window, env_steps)
        return buffer_transitions(buffer, window)

    def step(
        self, updates: int, agent: Transitions | None = None, use_prefs: bool = True
    ) -> dict[str, float]:
        """`updates` Adam steps on -(alpha * L1 + L2) + centring; returns the last one's parts.

        L1, the demonstration term, compares the demonstrations with the `agent` samples (none given: no
        demonstration term, alpha = 0); L2 is Bradley-Terry on the preference pairs (skipped with
        `use_prefs=False`); with neither, no update. Raises RewardDivergedError on NaN/inf.

        Centring (coef * mean r^2) is taken over per-transition rewards only: the demonstration and agent
        transitions and every transition of the sampled preference segments. (Squaring 50-step segment
        sums beside single transitions would weigh segments about 50^2 times more.)
        """
        cfg, demos = self.cfg, self.demos
        alpha = cfg.alpha if agent is not None else 0.0
        use_demo = demos is not None and agent is not None and len(agent) > 0 and alpha > 0
        prefs = self.prefs if use_prefs else None
        if not use_demo and prefs is None:
            return {}  # nothing to learn from yet (demo_term 'trajectory' before the first finished episode)
        stats: dict[str, float] = {}
        for _ in range(updates):
            demo_r = agent_r = chosen = rejected = labels = None
            per_step: list[torch.Tensor] = []
            if use_demo and cfg.demo_term == "trajectory":
                # every agent episode, and as many demonstrations drawn at random: discounted sums of each
                picks = self.rng.integers(len(demos.lengths), size=len(agent.lengths))
                demo_steps = demos.rewards(self.net, trajectory_rows(demos.lengths, picks))
                agent_steps = agent.rewards(self.net)
                demo_r = discounted_returns(demo_steps, torch.as_tensor(demos.lengths[picks]), cfg.gamma)
                agent_r = discounted_returns(agent_steps, torch.as_tensor(agent.lengths), cfg.gamma)
                per_step += [demo_steps, agent_steps]
            elif use_demo:
                demo_r = demos.rewards(self.net, self.rng.integers(len(demos), size=cfg.reward_batch_size))
                agent_r = agent.rewards(self.net, self.rng.integers(len(agent), size=cfg.reward_batch_size))
                per_step += [demo_r, agent_r]
            if prefs is not None:
                pick = self.rng.integers(len(prefs.segments), size=cfg.pref_batch_size)
                chosen, rejected, seg_r = segment_returns(
                    self.net, prefs.trans, prefs.starts, prefs.segments[pick]
                )
                labels = prefs.labels[torch.as_tensor(pick)]
                per_step.append(seg_r)
            out = aihf_reward_loss(
                demo_rewards=demo_r,
                agent_rewards=agent_r,
                chosen_rewards=chosen,
                rejected_rewards=rejected,
                alpha=alpha,
                demo_form=cfg.demo_form,  # type: ignore[arg-type]
                preference_labels=labels,
            )
            centering = reward_centering_penalty(torch.cat(per_step), cfg.centering_coef)
            loss = out.loss + centering
            self.optimizer.zero_grad()
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.optimizer.step()
            finite = torch.isfinite(loss) and all(torch.isfinite(p).all() for p in self.net.parameters())
            if not finite:
                raise RewardDivergedError(
                    f"the learned reward diverged (loss {loss.item()}); try a smaller reward_lr, "
                    "demo_form=logistic, centering_coef > 0 or reward_weight_decay > 0"
                )
            stats = {
                "loss": loss.item(),
                "demo": out.demo.item(),
                "preference": out.preference.item(),
                "centering": centering.item(),
            }
        return stats

    def preference_accuracy(self) -> dict[str, float | None]:
        """How often r_theta orders the held-out and the training pairs as labelled (None: no such pairs)."""
        return {
            "heldout_preference_accuracy": self.held_out.accuracy(self.net)
            if self.held_out is not None
            else None,
            "train_preference_accuracy": self.prefs.accuracy(self.net) if self.prefs is not None else None,
        }

    def rescore(self, buffer: ReplayBuffer) -> int:
        """Replace the buffer's stored rewards by the current r_theta (SAC's targets read them)."""
        return rescore_replay_buffer(buffer, self.net, self.cfg.reward_offset, self.cfg.reward_scale)

    def state_dict(self) -> dict[str, Any]:
        """Net and optimiser tensors and the data RNG's state: what an exact resume of it needs."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
