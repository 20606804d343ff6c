"""Inverse Preference Learning on sbx's SAC (JAX): the same method as `ipl.IPLSAC`, on the SAC library
every other control method runs on, so that IPL's row of a comparison carries no library confound.

The critic's TD loss becomes IPL's: Bradley-Terry on the segment sums of the implicit reward

    r_Q(s, a) = Q(s, a) - gamma * (1 - done) * V(s'),
    V(s') = min_heads Q_target(s', a') - ent_coef * log pi(a'|s'),   a' ~ pi(.|s'),

per critic head, plus 1 / (4 c) * mean r_Q^2 over the pairs' transitions and a replay batch, averaged
over the heads (`ipl.py` holds the derivation). sbx's actor, temperature and target updates are used
as they are. Segments may differ in length (whole trajectories): each pair's two segments are padded to
the longest segment of the preference set with a mask, fixed by `set_preferences`, so the jitted update
compiles once per run. The pairs of each update are drawn with the model's JAX key, which checkpoints
save, so a seeded run is reproducible and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from sbx import SAC
from sbx.common.type_aliases import ReplayBufferSamplesNp, RLTrainState

from aihf.control.reward_learning import PreferenceTensors


class PaddedPreferences(flax.struct.PyTreeNode):
    """The preference set on the JAX device: its transitions, and each pair's two segments as rows
    padded to the longest segment."""

    obs: jax.Array  # [N, obs_dim] every transition of the preference file
    act: jax.Array  # [N, act_dim] in SAC's [-1, 1] scale
    next_obs: jax.Array  # [N, obs_dim]
    done: jax.Array  # [N] 1 where the episode terminated (kept under 'bootstrap', as in ipl.py)
    rows: jax.Array  # [P, 2, L] rows of segment a and segment b of each pair; padding points at row 0
    mask: jax.Array  # [P, 2, L] 1 on a segment's rows, 0 on padding
    labels: jax.Array  # [P] probability that segment a is preferred


class CriticBatch(flax.struct.PyTreeNode):
    """One critic update's rows: the sampled pairs' padded segments (flattened), then the replay batch."""

    obs: jax.Array
    act: jax.Array
    next_obs: jax.Array
    done: jax.Array
    mask: jax.Array  # [pairs, 2, L] of the leading rows
    labels: jax.Array  # [pairs]


@dataclass(frozen=True)
class IPLData:
    """What `set_preferences` hands the model: never saved with it (the run reloads the data)."""

    prefs: PaddedPreferences
    pairs: int  # preference pairs per critic update
    chi2: float  # c of the chi^2 regulariser 1 / (4 c) * mean r_Q^2
    bootstrap: bool  # termination 'bootstrap': the replay batch's terminations are ignored too


def padded_segments(starts: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [P, 2, L] of segment a and b of each pair (`segments` as in the preference file) and their
    mask, L the longest segment."""
    begin = starts[segments[:, [0, 3]]] + segments[:, [1, 4]]
    lengths = segments[:, [2, 5]] - segments[:, [1, 4]]
    steps = np.arange(lengths.max())
    mask = steps < lengths[..., None]
    return np.where(mask, begin[..., None] + steps, 0).astype(np.int32), mask.astype(np.float32)


def critic_batch(
    prefs: PaddedPreferences,
    pick: jax.Array,
    obs: jax.Array,
    act: jax.Array,
    next_obs: jax.Array,
    done: jax.Array,
) -> CriticBatch:
    """The pairs `pick` of the preference set, followed by a replay batch."""
    rows = prefs.rows[pick].reshape(-1)
    return CriticBatch(
        obs=jnp.concatenate([prefs.obs[rows], obs]),
        act=jnp.concatenate([prefs.act[rows], act]),
        next_obs=jnp.concatenate([prefs.next_obs[rows], next_obs]),
        done=jnp.concatenate([prefs.done[rows], done]),
        mask=prefs.mask[pick],
        labels=prefs.labels[pick],
    )


def soft_next_values(
    qf_state: RLTrainState,
    ent_coef: jax.Array,
    next_obs: jax.Array,
    next_actions: jax.Array,
    next_log_prob: jax.Array,
    dropout_key: jax.Array,
) -> jax.Array:
    """V(s') = min over the target critic's heads of Q(s', a') - ent_coef * log pi(a'|s'), as SAC's target."""
    next_q = qf_state.apply_fn(
        qf_state.target_params, next_obs, next_actions, rngs={"dropout": dropout_key}
    ).min(axis=0)
    return next_q[:, 0] - ent_coef * next_log_prob


def ipl_critic_loss(
    params: flax.core.FrozenDict,
    qf_state: RLTrainState,
    batch: CriticBatch,
    next_values: jax.Array,
    gamma: float,
    chi2_coef: float,
    dropout_key: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """IPL's critic loss and (its preference term, its chi^2 term), each averaged over the critic heads."""
    q_values = qf_state.apply_fn(params, batch.obs, batch.act, rngs={"dropout": dropout_key})[..., 0]
    rewards = q_values - gamma * (1 - batch.done) * next_values  # [heads, rows]
    mask = batch.mask
    returns = (rewards[:, : mask.size].reshape(-1, *mask.shape) * mask).sum(axis=-1)  # [heads, pairs, 2]
    preference = optax.sigmoid_binary_cross_entropy(returns[..., 0] - returns[..., 1], batch.labels).mean(-1)
    weight = jnp.concatenate([mask.reshape(-1), jnp.ones(rewards.shape[1] - mask.size)])
    chi2 = (rewards**2 @ weight) / weight.sum() / (4 * chi2_coef)
    return (preference + chi2).mean(), (preference.mean(), chi2.mean())


class IPLSBXSAC(SAC):
    """sbx's SAC whose critic learns from preference pairs through its implicit reward (module doc)."""

    def set_preferences(self, prefs: PreferenceTensors, cfg: Any) -> None:
        """The preference data and IPL's settings; not saved with the model (the run reloads them)."""
        trans = prefs.trans
        rows, mask = padded_segments(prefs.starts, prefs.segments)
        scaled = np.clip(self.policy.scale_action(trans.act.numpy()), -1.0, 1.0)
        padded = PaddedPreferences(
            obs=jnp.asarray(trans.obs.numpy(), dtype=jnp.float32),
            act=jnp.asarray(scaled, dtype=jnp.float32),
            next_obs=jnp.asarray(trans.next_obs.numpy(), dtype=jnp.float32),
            done=jnp.asarray(trans.done.numpy(), dtype=jnp.float32),
            rows=jnp.asarray(rows),
            mask=jnp.asarray(mask),
            labels=jnp.asarray(prefs.labels.numpy(), dtype=jnp.float32),
        )
        self._ipl = IPLData(
            padded, cfg.ipl_pref_batch_size, float(cfg.ipl_chi2_coef), cfg.termination == "bootstrap"
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_ipl"]

    def _train(  # type: ignore[override]
        self,
        tau: float,
        target_entropy: float,
        gradient_steps: int,
        data: ReplayBufferSamplesNp,
        policy_delay: int,
        policy_delay_offset: int,
        qf_state: RLTrainState,
        actor_state: TrainState,
        ent_coef_state: TrainState,
        key: jax.Array,
    ) -> tuple[Any, ...]:
        """Called by sbx's `train` (which samples the replay batches, schedules the learning rates and
        logs the SAC losses) in place of its jitted SAC updates: IPL's, with the preference data."""
        ipl = self._ipl
        dones = np.zeros_like(data.dones) if ipl.bootstrap else data.dones
        qf_state, actor_state, ent_coef_state, key, losses, (preference, chi2) = self._ipl_updates(
            tau,
            target_entropy,
            self.gamma,
            ipl.chi2,
            gradient_steps,
            ipl.pairs,
            data.observations,
            data.actions,
            data.next_observations,
            dones,
            ipl.prefs,
            policy_delay,
            policy_delay_offset,
            qf_state,
            actor_state,
            ent_coef_state,
            key,
        )
        self.logger.record("train/preference_loss", preference.item())
        self.logger.record("train/chi2", chi2.item())
        return qf_state, actor_state, ent_coef_state, key, losses

    @staticmethod
    @jax.jit
    def update_critic_ipl(
        actor_state: TrainState,
        qf_state: RLTrainState,
        ent_coef_state: TrainState,
        batch: CriticBatch,
        gamma: float,
        chi2_coef: float,
        key: jax.Array,
    ) -> tuple[RLTrainState, tuple[jax.Array, ...], jax.Array]:
        """sbx's `update_critic` with IPL's loss in place of the TD error."""
        key, noise_key, dropout_key_target, dropout_key_current = jax.random.split(key, 4)
        dist = actor_state.apply_fn(actor_state.params, batch.next_obs)
        next_actions = dist.sample(seed=noise_key)
        next_log_prob = dist.log_prob(next_actions)
        ent_coef_value = ent_coef_state.apply_fn({"params": ent_coef_state.params})
        next_values = soft_next_values(
            qf_state, ent_coef_value, batch.next_obs, next_actions, next_log_prob, dropout_key_target
        )
        (loss, (preference, chi2)), grads = jax.value_and_grad(ipl_critic_loss, has_aux=True)(
            qf_state.params, qf_state, batch, next_values, gamma, chi2_coef, dropout_key_current
        )
        qf_state = qf_state.apply_gradients(grads=grads)
        return qf_state, (loss, preference, chi2, ent_coef_value), key

    @classmethod
    @partial(
        jax.jit, static_argnames=["cls", "gradient_steps", "pairs", "policy_delay", "policy_delay_offset"]
    )
    def _ipl_updates(
        cls,
        tau: float,
        target_entropy: float,
        gamma: float,
        chi2_coef: float,
        gradient_steps: int,
        pairs: int,
        observations: jax.Array,
        actions: jax.Array,
        next_observations: jax.Array,
        dones: jax.Array,
        prefs: PaddedPreferences,
        policy_delay: int,
        policy_delay_offset: int,
        qf_state: RLTrainState,
        actor_state: TrainState,
        ent_coef_state: TrainState,
        key: jax.Array,
    ) -> tuple[Any, ...]:
        """sbx's `_train` loop (critic, target, then every `policy_delay` updates the actor and the
        temperature), each critic update on `pairs` preference pairs drawn with `key` and a replay batch."""
        batch_size = observations.shape[0] // gradient_steps
        n_prefs = prefs.labels.shape[0]
        zero = jnp.array(0.0)
        info = {name: zero for name in ("actor_loss", "qf_loss", "ent_coef_loss", "ent_coef", "pref", "chi2")}
        carry = {
            "actor_state": actor_state,
            "qf_state": qf_state,
            "ent_coef_state": ent_coef_state,
            "key": key,
            "info": info,
        }

        def one_update(i: int, carry: dict[str, Any]) -> dict[str, Any]:
            actor_state, ent_coef_state, info = carry["actor_state"], carry["ent_coef_state"], carry["info"]
            key, pick_key = jax.random.split(carry["key"])
            replay = [
                jax.lax.dynamic_slice_in_dim(x, i * batch_size, batch_size)
                for x in (observations, actions, next_observations, dones)
            ]
            pick = jax.random.randint(pick_key, (pairs,), 0, n_prefs)
            batch = critic_batch(prefs, pick, *replay)
            qf_state, (qf_loss, preference, chi2, ent_coef_value), key = cls.update_critic_ipl(
                actor_state, carry["qf_state"], ent_coef_state, batch, gamma, chi2_coef, key
            )
            qf_state = cls.soft_update(tau, qf_state)
            actor_state, qf_state, ent_coef_state, actor_loss, ent_coef_loss, key = jax.lax.cond(
                (policy_delay_offset + i) % policy_delay == 0,
                cls.update_actor_and_temperature,
                lambda *_: (
                    actor_state,
                    qf_state,
                    ent_coef_state,
                    info["actor_loss"],
                    info["ent_coef_loss"],
                    key,
                ),
                actor_state,
                qf_state,
                ent_coef_state,
                replay[0],
                target_entropy,
                key,
            )
            return {
                "actor_state": actor_state,
                "qf_state": qf_state,
                "ent_coef_state": ent_coef_state,
                "key": key,
                "info": {
                    "actor_loss": actor_loss,
                    "qf_loss": qf_loss,
                    "ent_coef_loss": ent_coef_loss,
                    "ent_coef": ent_coef_value,
                    "pref": preference,
                    "chi2": chi2,
                },
            }

        out = jax.lax.fori_loop(0, gradient_steps, one_update, carry)
        info = out["info"]
        losses = (info["actor_loss"], info["qf_loss"], info["ent_coef_loss"], info["ent_coef"])
        return (
            out["qf_state"],
            out["actor_state"],
            out["ent_coef_state"],
            out["key"],
            losses,
            (info["pref"], info["chi2"]),
        )
