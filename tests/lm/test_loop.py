"""The shared loop's Trainer features: gradient accumulation, checkpointing, dropout, trackers, modes."""

import pytest
import torch

from aihf.lm.aihf_trainer import AIHFTrainer
from aihf.lm.config import AIHFConfig, DirectAIHFConfig, SelfPlayAIHFConfig
from aihf.lm.data import prepare_text_data
from aihf.lm.direct import DirectAIHFTrainer, SelfPlayAIHFTrainer
from aihf.lm.loop import Callback, Evaluate
from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer

QUIET = {"report_to": "none", "learning_rate": 1e-2, "max_completion_length": 5}


def _data(tiny_dir, data_dir):
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    return tokenizer, {
        name: prepare_text_data(data_dir / f"{name}.jsonl", name, tokenizer)
        for name in ("demos", "prefs", "prompts")
    }


def _direct(tiny_dir, data_dir, tmp_path, **overrides):
    tokenizer, data = _data(tiny_dir, data_dir)
    values = {"report_to": "none", "learning_rate": 1e-2, "alpha": 1.0} | overrides
    config = DirectAIHFConfig(output_dir=str(tmp_path / "direct"), **values)
    policy = load_causal_lm(str(tiny_dir / "policy"))
    return DirectAIHFTrainer(policy, tokenizer, config, prefs=data["prefs"], demos=data["demos"])


def _self_play(tiny_dir, data_dir, tmp_path, **overrides):
    tokenizer, data = _data(tiny_dir, data_dir)
    values = QUIET | {"steps_per_iteration": 1} | overrides
    config = SelfPlayAIHFConfig(output_dir=str(tmp_path / "sp"), **values)
    policy = load_causal_lm(str(tiny_dir / "policy"))
    return SelfPlayAIHFTrainer(policy, tokenizer, config, demos=data["demos"], prefs=data["prefs"])


def _aihf(tiny_dir, data_dir, tmp_path, **overrides):
    tokenizer, data = _data(tiny_dir, data_dir)
    values = QUIET | {"num_generations": 2} | overrides
    config = AIHFConfig(output_dir=str(tmp_path / "aihf"), **values)
    return AIHFTrainer(
        load_causal_lm(str(tiny_dir / "policy")),
        tokenizer,
        config,
        reward_model=load_reward_model(str(tiny_dir / "reward_model")),
        demos=data["demos"],
        prefs=data["prefs"],
        prompts=data["prompts"],
    )


# Adam's first step is lr * g / (|g| + eps): with a large eps it is a smooth function of the gradient, so
# float noise in near-zero gradients cannot swing the comparison, and a wrong accumulation still shows.
SMOOTH_ADAM = {"learning_rate": 1.0, "adam_epsilon": 1.0, "max_grad_norm": 0.0}  # no clipping either


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _step_deltas(trainer, models=("policy",)):
    """Run one unit of training from a fixed seed; the parameter change of each model, and the metrics."""
    before = {name: _params(getattr(trainer, name)) for name in models}
    torch.manual_seed(0)
    metrics = trainer.training_step()
    deltas = {}
    for name in models:
        after = _params(getattr(trainer, name))
        deltas[name] = {k: after[k] - before[name][k] for k in after}
    return deltas, metrics


def _assert_same_update(a, b):
    assert a.keys() == b.keys()
    scale = max(v.abs().max().item() for v in a.values())
    assert scale > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4 * scale, msg=key)


@pytest.mark.parametrize("build", [_direct, _self_play])
def test_four_micro_batches_of_two_give_the_update_of_one_batch_of_eight(build, tiny_dir, data_dir, tmp_path):
    whole = build(tiny_dir, data_dir, tmp_path / "a", per_device_train_batch_size=8, **SMOOTH_ADAM)
    accumulated = build(
        tiny_dir,
        data_dir,
        tmp_path / "b",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        **SMOOTH_ADAM,
    )
    (d_whole, m_whole), (d_acc, m_acc) = _step_deltas(whole), _step_deltas(accumulated)
    _assert_same_update(d_whole["policy"], d_acc["policy"])
    assert m_whole["loss"] == pytest.approx(m_acc["loss"], rel=1e-4)


def test_aihf_accumulation_matches_for_both_the_policy_and_the_reward(tiny_dir, data_dir, tmp_path):
    sizes = {"prompt_batch_size": 4, "reward_batch_size": 4}
    whole = _aihf(tiny_dir, data_dir, tmp_path / "a", **sizes, **SMOOTH_ADAM)
    halves = {"prompt_batch_size": 2, "reward_batch_size": 2, "gradient_accumulation_steps": 2}
    accumulated = _aihf(tiny_dir, data_dir, tmp_path / "b", **halves, **SMOOTH_ADAM)
    models = ("policy", "reward_model")
    (d_whole, m_whole), (d_acc, m_acc) = _step_deltas(whole, models), _step_deltas(accumulated, models)
    for name in models:
        _assert_same_update(d_whole[name], d_acc[name])
    assert m_whole["loss/reward"] == pytest.approx(m_acc["loss/reward"], rel=1e-4)


def test_gradient_checkpointing_recomputes_the_blocks_in_backward(tiny_dir, data_dir, tmp_path):
    """transformers checkpoints only in training mode; each block must then run twice per step."""
    counts = {}
    for flag in (False, True):
        trainer = _direct(tiny_dir, data_dir, tmp_path / str(flag), gradient_checkpointing=flag)
        assert trainer.policy.training
        # Module hooks do not fire in the recompute, so count calls of a layer inside the block directly.
        layer = trainer.accelerator.unwrap_model(trainer.policy).transformer.h[0].mlp.c_fc
        calls, forward = [], layer.forward
        layer.forward = lambda x, calls=calls, forward=forward: calls.append(1) or forward(x)
        trainer.training_step()
        counts[flag] = len(calls)
    assert counts[True] == 2 * counts[False]


def test_dropout_is_off_after_lora_wrapping(tiny_dir, data_dir, tmp_path):
    trainer = _direct(tiny_dir, data_dir, tmp_path, use_peft=True, lora_r=4, lora_dropout=0.3)
    dropouts = [m for m in trainer.policy.modules() if isinstance(m, torch.nn.Dropout)]
    assert any(
        "lora" in name for name, m in trainer.policy.named_modules() if isinstance(m, torch.nn.Dropout)
    )
    assert dropouts and all(m.p == 0.0 for m in dropouts)


def test_reward_model_scores_in_eval_mode_and_trains_in_train_mode(tiny_dir, data_dir, tmp_path):
    trainer = _aihf(tiny_dir, data_dir, tmp_path, prompt_batch_size=2, reward_batch_size=2)
    model = trainer.reward_model
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    assert not model.training
    trainer.current_reward()(["The film was"], [" fine."])
    trainer.reward_step()
    assert modes == [False, True]
    assert not model.training


def test_tensorboard_tracker_writes_events_and_logging_steps_hold(tiny_dir, data_dir, tmp_path):
    trainer = _self_play(
        tiny_dir,
        data_dir,
        tmp_path,
        report_to=["tensorboard"],
        max_iterations=3,
        logging_steps=2,
        per_device_train_batch_size=3,
    )
    trainer.train()
    [events] = (tmp_path / "sp" / "runs").rglob("events.out.tfevents.*")  # one run, hparams in it too
    assert b"_hparams_/session_start_info" in events.read_bytes()
    assert [p for p in (tmp_path / "sp" / "runs").rglob("*") if p.is_file()] == [events]  # no hparams.yml
    logged = (tmp_path / "sp" / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == 2  # iteration 2, and the last one (3)


def test_wandb_tracker_runs_offline_when_installed(tiny_dir, data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    trainer = _direct(tiny_dir, data_dir, tmp_path, report_to=["wandb"], max_steps=1)
    trainer.train()
    assert list(tmp_path.rglob("offline-run-*"))


class Recorder(Callback):
    """Every hook call in order; adds a metric of its own at each unit's end."""

    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append(("begin", trainer.state.step))

    def on_step_begin(self, trainer):
        self.events.append(("step_begin", trainer.state.step))

    def on_step_end(self, trainer, metrics):
        self.events.append(("step_end", trainer.state.step))
        metrics["recorder/step"] = float(trainer.state.step)

    def on_train_end(self, trainer):
        self.events.append(("end", trainer.state.step))


def test_callbacks_run_around_every_unit_and_their_metrics_are_logged(tiny_dir, data_dir, tmp_path):
    import json

    trainer = _direct(tiny_dir, data_dir, tmp_path, max_steps=2, per_device_train_batch_size=3)
    recorder = Recorder()
    trainer.add_callback(recorder)
    trainer.train()
    assert recorder.events == [
        ("begin", 0),
        ("step_begin", 0),
        ("step_end", 1),
        ("step_begin", 1),
        ("step_end", 2),
        ("end", 2),
    ]
    logged = [json.loads(line) for line in (tmp_path / "direct" / "metrics.jsonl").read_text().splitlines()]
    assert [r["recorder/step"] for r in logged] == [1.0, 2.0]
    # Direct AIHF's throughput comes from the `Throughput` callback, which consumes the unit's token count
    assert all(r["train/tokens_per_second"] > 0 and "train/tokens" not in r for r in logged)


def test_entropy_is_computed_only_on_logged_iterations(tiny_dir, data_dir, tmp_path):
    trainer = _aihf(tiny_dir, data_dir, tmp_path, max_iterations=3, logging_steps=2, prompt_batch_size=2)
    trainer.add_callback(recorder := Recorder())
    trainer.train()
    assert len(recorder.events) == 8
    logged = trainer.logger.last
    assert logged["step"] == 3 and "objective/entropy" in logged  # the last iteration is logged
    trainer.state.step = 0  # the next unit is iteration 1: not logged, so no entropy
    assert "objective/entropy" not in trainer.training_step()
    trainer.state.step = 1
    assert "objective/entropy" in trainer.training_step()


def test_evaluate_callback_logs_evaluations_without_moving_the_training_stream(tiny_dir, data_dir, tmp_path):
    """Evaluating every 2 units adds eval/ metrics there and leaves the training's numbers unchanged."""
    import json

    from aihf.lm.modeling import SamplingConfig

    def length_gold(prompts, completions):
        return [float(len(c)) for c in completions]

    runs = {}
    for name in ("plain", "evaluated"):
        trainer = _aihf(tiny_dir, data_dir, tmp_path / name, max_iterations=3, prompt_batch_size=2)
        if name == "evaluated":
            reference = load_causal_lm(str(tiny_dir / "policy")).eval()
            config = SamplingConfig(max_new_tokens=4)
            trainer.add_callback(Evaluate(2, ["The film was", "Our team"], length_gold, reference, config))
        trainer.train()
        path = tmp_path / name / "aihf" / "metrics.jsonl"
        runs[name] = [json.loads(line) for line in path.read_text().splitlines()]
    evaluated = [r for r in runs["evaluated"] if "eval/gold_reward_mean" in r]
    assert [r["step"] for r in evaluated] == [2]
    assert evaluated[0]["eval/kl_to_ref"] != 0.0  # the policy has moved from its reference
    for plain, other in zip(runs["plain"], runs["evaluated"]):
        for key, value in plain.items():
            assert other[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
