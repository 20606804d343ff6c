"""IPL on sbx's SAC (`ipl_sbx.py`): its critic loss is sb3's (`ipl.py`), the labels drive the update,
'bootstrap' ignores terminations, and the CLI trains, saves, loads and resumes a seeded run exactly."""

import base64
import json
import pickletools
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from aihf.cli import main
from aihf.control.backends import get_backend, sac_kwargs
from aihf.control.config import AIHFControlConfig
from aihf.control.envs import make_env
from aihf.control.ipl import IPLSAC
from aihf.control.ipl_sbx import IPLSBXSAC, critic_batch, ipl_critic_loss, padded_segments, soft_next_values
from aihf.control.reward_learning import PreferenceTensors, Transitions, segment_rows
from aihf.control.train import train

SMALL = {"policy_kwargs": {"net_arch": [16, 16]}, "n_timesteps": 200, "ipl_chi2_coef": 0.7}


@pytest.fixture(autouse=True)
def _only_control_cli(monkeypatch):
    """The other domains live on other branches; the dispatcher and its error handling are the real ones."""
    monkeypatch.setattr("aihf.cli.DOMAINS", ("aihf.control.cli",))


def _hand_made_prefs() -> PreferenceTensors:
    """Three Pendulum-sized trajectories (lengths 4, 7, 3; the first and last end in a termination) and
    pairs of unequal segments, one label a tie."""
    rng = np.random.default_rng(5)
    n = 14
    done = np.zeros(n, np.float32)
    done[[3, 13]] = 1.0
    trans = Transitions(
        torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32),
        torch.as_tensor(rng.uniform(-2, 2, size=(n, 1)), dtype=torch.float32),
        torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32),
        torch.as_tensor(done),
    )
    segments = np.array([[0, 0, 4, 1, 2, 7], [2, 1, 3, 1, 0, 7], [1, 3, 4, 0, 1, 3]])
    return PreferenceTensors(trans, np.array([0, 4, 11]), segments, torch.tensor([1.0, 0.0, 0.5]))


def test_padded_segments_hold_each_segments_rows_in_order():
    prefs = _hand_made_prefs()
    rows, mask = padded_segments(prefs.starts, prefs.segments)
    assert rows.shape == mask.shape == (3, 2, 7)
    flat, seg_id = segment_rows(prefs.starts, prefs.segments)  # a sides, then b sides
    for pair in range(3):
        for side in range(2):
            kept = rows[pair, side][mask[pair, side] == 1]
            np.testing.assert_array_equal(kept, flat[seg_id == side * 3 + pair])


def _sb3_critic_from(model: IPLSAC, params, which: str) -> None:
    """Write an sbx critic's parameters (its `VmapContinuousCritic_0` Dense layers, one slice per head)
    into the sb3 model's critic or critic_target."""
    dense = params["params"]["VmapContinuousCritic_0"]
    net = getattr(model, which)
    for head, q_net in enumerate(net.q_networks):
        linears = [layer for layer in q_net if isinstance(layer, torch.nn.Linear)]
        assert len(linears) == len(dense)
        for k, linear in enumerate(linears):
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(np.asarray(dense[f"Dense_{k}"]["kernel"][head]).T))
                linear.bias.copy_(torch.tensor(np.asarray(dense[f"Dense_{k}"]["bias"][head])))


def test_sbx_critic_loss_and_gradient_equal_sb3s_on_the_same_weights(monkeypatch):
    """The same critic (online and target) in both libraries, the same pairs, replay rows and next
    actions: the same loss, preference term, chi^2 term and critic gradient."""
    cfg = AIHFControlConfig(algo="ipl", **SMALL)
    prefs = _hand_made_prefs()
    sbx_model = get_backend("sbx").make(make_env("Pendulum-v1", 0), 0, "cpu", IPLSBXSAC, **sac_kwargs(cfg))
    sb3_model = get_backend("sb3").make(make_env("Pendulum-v1", 0), 0, "cpu", IPLSAC, **sac_kwargs(cfg))
    for model in (sbx_model, sb3_model):
        model.set_preferences(prefs, cfg)
    qf_state = sbx_model.policy.qf_state
    qf_state = qf_state.replace(target_params=jax.tree.map(lambda p: 0.7 * p + 0.05, qf_state.params))
    _sb3_critic_from(sb3_model, qf_state.params, "critic")
    _sb3_critic_from(sb3_model, qf_state.target_params, "critic_target")

    rng = np.random.default_rng(1)
    pick = np.array([0, 2, 1, 0])
    replay_obs = rng.normal(size=(5, 3)).astype(np.float32)
    replay_act = rng.uniform(-1, 1, size=(5, 1)).astype(np.float32)
    replay_next = rng.normal(size=(5, 3)).astype(np.float32)
    replay_done = np.array([0, 1, 0, 0, 1], np.float32)
    # next actions and their log-probabilities as fixed functions of s', the same in both libraries
    mix, tilt = rng.normal(size=(3, 1)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    ent_coef, gamma = 0.2, sb3_model.gamma

    batch = critic_batch(
        sbx_model._ipl.prefs, jnp.asarray(pick), replay_obs, replay_act, replay_next, replay_done
    )
    next_values = soft_next_values(
        qf_state,
        ent_coef,
        batch.next_obs,
        jnp.tanh(batch.next_obs @ mix),
        batch.next_obs @ tilt + 0.3,
        jax.random.PRNGKey(0),
    )
    (loss, (pref, chi2)), grads = jax.value_and_grad(ipl_critic_loss, has_aux=True)(
        qf_state.params, qf_state, batch, next_values, gamma, cfg.ipl_chi2_coef, jax.random.PRNGKey(0)
    )

    mix_t, tilt_t = torch.as_tensor(mix), torch.as_tensor(tilt)
    monkeypatch.setattr(
        sb3_model.actor, "action_log_prob", lambda obs: (torch.tanh(obs @ mix_t), obs @ tilt_t + 0.3)
    )
    rows, seg_id = segment_rows(prefs.starts, prefs.segments[pick])
    data = sb3_model._ipl
    sb3_loss, sb3_pref, sb3_chi2 = sb3_model._critic_loss(
        torch.cat([data["obs"][rows], torch.as_tensor(replay_obs)]),
        torch.cat([data["act"][rows], torch.as_tensor(replay_act)]),
        torch.cat([data["next_obs"][rows], torch.as_tensor(replay_next)]),
        torch.cat([data["done"][rows], torch.as_tensor(replay_done)]),
        torch.tensor(ent_coef),
        seg_id,
        data["labels"][torch.as_tensor(pick)],
    )
    sb3_loss.backward()

    for ours, theirs in ((loss, sb3_loss), (pref, sb3_pref), (chi2, sb3_chi2)):
        torch.testing.assert_close(torch.tensor(np.asarray(ours)), theirs.detach())
    dense = grads["params"]["VmapContinuousCritic_0"]
    for head, q_net in enumerate(sb3_model.critic.q_networks):
        linears = [layer for layer in q_net if isinstance(layer, torch.nn.Linear)]
        for k, linear in enumerate(linears):
            kernel = torch.tensor(np.asarray(dense[f"Dense_{k}"]["kernel"][head]).T)
            torch.testing.assert_close(kernel, linear.weight.grad)
            torch.testing.assert_close(
                torch.tensor(np.asarray(dense[f"Dense_{k}"]["bias"][head])), linear.bias.grad
            )


@pytest.fixture(scope="module")
def filled_model(tiny_data) -> IPLSBXSAC:
    """An sbx IPL model with 100 random-action transitions in its replay buffer and no update yet."""
    cfg = AIHFControlConfig(algo="ipl", backend="sbx", **SMALL)
    model = get_backend("sbx").make(
        make_env("Pendulum-v1", 0), 0, "cpu", IPLSBXSAC, **{**sac_kwargs(cfg), "learning_starts": 100}
    )
    model.set_preferences(PreferenceTensors.build(tiny_data["prefs"], cfg), cfg)
    model.learn(100)
    assert model._n_updates == 0
    return model


def _critic(model: IPLSBXSAC) -> list:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(model.policy.qf_state.params)]


def _critic_after_one_update(model: IPLSBXSAC, prefs: PreferenceTensors, cfg: AIHFControlConfig) -> list:
    """The critic's parameters after one IPL update from the model's state now, which is then restored."""
    policy = model.policy
    saved = (policy.qf_state, policy.actor_state, model.ent_coef_state, model.key, model._n_updates)
    model.set_preferences(prefs, cfg)
    np.random.seed(0)  # sb3's replay buffer samples with numpy's global generator
    model.train(gradient_steps=1, batch_size=32)
    updated = _critic(model)
    policy.qf_state, policy.actor_state, model.ent_coef_state, model.key, model._n_updates = saved
    return updated


def _same(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_labels_drive_the_critic_update(filled_model, tiny_data):
    cfg = AIHFControlConfig(algo="ipl", backend="sbx", **SMALL)
    prefs = PreferenceTensors.build(tiny_data["prefs"], cfg)
    assert set(prefs.labels.tolist()) == {0.0, 1.0}  # no ties, which flipping would leave alone
    flipped = PreferenceTensors(prefs.trans, prefs.starts, prefs.segments, 1 - prefs.labels)
    first = _critic_after_one_update(filled_model, prefs, cfg)
    assert _same(first, _critic_after_one_update(filled_model, prefs, cfg))
    assert not _same(first, _critic_after_one_update(filled_model, flipped, cfg))


def test_bootstrap_ignores_the_replay_batchs_terminations(filled_model, tiny_data):
    env_cfg = AIHFControlConfig(algo="ipl", backend="sbx", **SMALL)
    boot_cfg = AIHFControlConfig(algo="ipl", backend="sbx", termination="bootstrap", **SMALL)
    prefs = PreferenceTensors.build(tiny_data["prefs"], env_cfg)
    dones = filled_model.replay_buffer.dones
    kept = dones.copy()
    try:
        dones[:100] = 1.0
        with_ends = _critic_after_one_update(filled_model, prefs, env_cfg)
        bootstrapped = _critic_after_one_update(filled_model, prefs, boot_cfg)
        dones[:100] = 0.0
        without_ends = _critic_after_one_update(filled_model, prefs, env_cfg)
    finally:
        dones[:] = kept
    assert _same(bootstrapped, without_ends)
    assert not _same(with_ends, without_ends)


def _cli_run(tiny_data, out, *extra: str) -> int:
    argv = ["control", "train", "--env", "Pendulum-v1", "--algo", "ipl", "--backend", "sbx", "--seed", "0"]
    argv += ["--prefs", str(tiny_data["prefs_path"]), "--out", str(out), "--no-progress"]
    argv += ["--n-timesteps", "200", "--steps-per-iter", "100", "--learning-starts", "100"]
    argv += ["--eval-episodes", "1", "--batch-size", "32", "--ipl-pref-batch-size", "4"]
    argv += ["--policy-kwargs", json.dumps(SMALL["policy_kwargs"]), "--tensorboard", "false", *extra]
    return main(argv)


def _pickled_blobs(policy_zip) -> list[bytes]:
    """Every cloudpickled value in a saved model's 'data' (sb3 and sbx store them base64 in JSON)."""
    data = json.loads(zipfile.ZipFile(policy_zip).read("data"))
    assert "_ipl" not in data
    return [
        base64.b64decode(v[":serialized:"])
        for v in data.values()
        if isinstance(v, dict) and ":serialized:" in v
    ]


def _pickled_modules(blob: bytes) -> set[str]:
    """The modules whose objects a pickle references (what unpickling would import), read from its
    opcodes without running it: a path that merely contains "aihf" (a clone named so) is not one."""
    pushed, memo, modules = [], {}, set()
    for op, arg, _ in pickletools.genops(blob):
        if op.name == "GLOBAL":
            modules.add(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL":
            modules.add(pushed[-2])
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif isinstance(arg, str):
            pushed.append(arg)
    return {m for m in modules if isinstance(m, str)}


class _InterruptMidIteration(BaseCallback):
    """Ctrl-C in the middle of the second 100-step iteration, 50 updates in."""

    def _on_step(self) -> bool:
        if self.num_timesteps == 150:
            raise KeyboardInterrupt
        return True


def test_ipl_on_sbx_trains_saves_loads_and_repeats_its_seeded_run_through_a_resume(tiny_data, tmp_path):
    """A seeded CLI run, and the same run stopped by Ctrl-C mid-iteration then resumed, end alike: the
    pairs are drawn with the checkpointed JAX key, and the preference data comes back on load."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _cli_run(tiny_data, full) == 0
    results = json.loads((full / "results.json").read_text())
    assert results["algo"] == "ipl" and results["backend"] == "sbx" and results["env_steps"] == 200
    assert np.isfinite(results["eval_return_mean"])
    cfg = AIHFControlConfig.from_dict(results["config"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, cut, None, tiny_data["prefs"], callback=_InterruptMidIteration(), progress=False)
    assert main(["control", "train", "--resume", str(cut), "--no-progress"]) == 0
    resumed = json.loads((cut / "results.json").read_text())
    assert resumed["eval_return_mean"] == results["eval_return_mean"]
    assert (full / "curve.csv").read_text() == (cut / "curve.csv").read_text()

    blobs = _pickled_blobs(full / "policy.zip")
    modules = set().union(*map(_pickled_modules, blobs))
    assert "collections" in modules  # the reading works: SB3 pickles a deque
    assert not any(m == "aihf" or m.startswith("aihf.") for m in modules)  # nothing of ours
    loaded = [IPLSBXSAC.load(out / "policy.zip") for out in (full, cut)]
    assert not hasattr(loaded[0], "_ipl")
    assert loaded[0]._n_updates == loaded[1]._n_updates == 100  # one per step after learning_starts
    assert _same(_critic(loaded[0]), _critic(loaded[1]))
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    backend = get_backend("sbx")
    np.testing.assert_array_equal(backend.act(loaded[0], obs), backend.act(loaded[1], obs))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--ipl-chi2-coef", "0"], "--ipl_chi2_coef = 0"),
        (["--ipl-pref-batch-size", "0"], "--ipl_pref_batch_size = 0"),
        (["--backend", "jax"], "field 'backend' = 'jax': expected one of sb3, sbx"),
    ],
    ids=["chi2", "pairs", "backend"],
)
def test_bad_ipl_input_on_sbx_is_one_line_exit_2(extra, expected, tiny_data, tmp_path, capfd):
    try:
        code = _cli_run(tiny_data, tmp_path / "out", *extra)
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


def test_ipl_on_sbx_needs_next_states_in_the_preference_file(tiny_data, tmp_path, capfd):
    with np.load(tiny_data["prefs_path"]) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("next_observations", "final_observations")}
    np.savez(tmp_path / "prefs.npz", **arrays)
    assert _cli_run({"prefs_path": tmp_path / "prefs.npz"}, tmp_path / "out") == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "algo ipl needs 'next_observations' in the preference file" in lines[0]
