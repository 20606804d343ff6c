import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from aihf import checkpoints
from aihf.lm.aihf_trainer import AIHFTrainer
from aihf.lm.config import AIHFConfig
from aihf.lm.data import prepare_text_data
from aihf.lm.modeling import RewardScorer, load_causal_lm, load_reward_model, load_tokenizer
from aihf.lm.runtime import snapshot_dirs
from aihf.lm.train import run_training

SMALL = {
    "per_device_train_batch_size": 6,
    "prompt_batch_size": 3,
    "num_generations": 2,
    "max_completion_length": 6,
    "report_to": "none",
}


def _trainer(tiny_dir, data_dir, tmp_path, **overrides):
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    config = AIHFConfig(output_dir=str(tmp_path / "aihf"), **(SMALL | overrides))
    return AIHFTrainer(
        load_causal_lm(str(tiny_dir / "policy")),
        tokenizer,
        config,
        reward_model=load_reward_model(str(tiny_dir / "reward_model")),
        demos=prepare_text_data(data_dir / "demos.jsonl", "demos", tokenizer),
        prefs=prepare_text_data(data_dir / "prefs.jsonl", "prefs", tokenizer),
    )


def _rl_trainer(tiny_dir, data_dir, config, reward_fn):
    """RLHF's RL stage: the policy step toward a frozen Python reward function, on the shipped prompts."""
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    return AIHFTrainer(
        load_causal_lm(str(tiny_dir / "policy")),
        tokenizer,
        config,
        reward_fn=reward_fn,
        prompts=prepare_text_data(data_dir / "prompts.jsonl", "prompts", tokenizer),
        method="rlhf",
    )


@torch.no_grad()
def _reward_gaps(trainer):
    """Held-fixed agent samples: R(demo) - R(agent) and preference accuracy of the current reward model."""
    scorer = trainer.current_reward()
    demos, prefs = trainer.demos, trainer.prefs
    torch.manual_seed(123)
    agent = trainer.policy_step.sample(demos.column("prompt"), 1).completions
    demo_gap = scorer(demos.column("prompt"), demos.column("completion")) - scorer(
        demos.column("prompt"), agent
    )
    margins = scorer(prefs.column("prompt"), prefs.column("chosen")) - scorer(
        prefs.column("prompt"), prefs.column("rejected")
    )
    return demo_gap.mean().item(), (margins > 0).float().mean().item()


@pytest.mark.parametrize("demo_form", ["logistic", "linear"])
def test_reward_step_raises_demo_margin_and_preference_accuracy(tiny_dir, data_dir, tmp_path, demo_form):
    trainer = _trainer(tiny_dir, data_dir, tmp_path, learning_rate=3e-3, demo_form=demo_form)
    gap_before, acc_before = _reward_gaps(trainer)
    for _ in range(15):
        metrics = trainer.reward_step()
    gap_after, acc_after = _reward_gaps(trainer)
    assert gap_after > gap_before + 1.0
    assert acc_after == 1.0 and acc_before < 1.0
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("policy_optimizer", ["rloo", "online_dpo"])
def test_aihf_run_trains_both_models_and_logs_finite_metrics(tiny_dir, data_dir, tmp_path, policy_optimizer):
    out = tmp_path / "run"
    final = run_training(
        "aihf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(tiny_dir / "reward_model"),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        prompts=str(data_dir / "prompts.jsonl"),
        max_iterations=2,
        config=SMALL | {"policy_optimizer": policy_optimizer, "learning_rate": 1e-3},
    )
    before = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "policy").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in (
        "loss/policy",
        "loss/reward",
        "objective/kl",
        "objective/entropy",
        "rewards/demo",
        "rewards/agent",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
    ):
        assert all(math.isfinite(r[key]) for r in records), key
    assert final["step"] == 2
    assert (out / "reward_model" / "config.json").exists()
    assert "aihf" in (out / "policy" / "README.md").read_text()


def test_policy_step_takes_a_python_reward_function(tiny_dir, data_dir, tmp_path):
    calls = []

    def reward_fn(prompts, completions):
        calls.append((list(prompts), list(completions)))
        return [float(c.count("e")) for c in completions]

    config = AIHFConfig(output_dir=str(tmp_path / "rl"), max_iterations=2, learning_rate=1e-3, **SMALL)
    trainer = _rl_trainer(tiny_dir, data_dir, config, reward_fn)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics = trainer.train()
    assert len(calls) == 2 and len(calls[0][0]) == 3 * 2  # prompt_batch_size * num_samples
    assert calls[0][0][0] == calls[0][0][1]  # the k samples of one prompt are grouped
    assert math.isfinite(metrics["objective/scores"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert not (tmp_path / "rl" / "reward_model").exists()  # nothing learned a reward


@pytest.mark.parametrize("lora", [False, True])
def test_interrupted_run_resumes_from_its_checkpoint(tiny_dir, data_dir, tmp_path, lora):
    def run(out, iterations, **extra):
        return run_training(
            "aihf",
            str(tiny_dir / "policy"),
            str(out),
            reward_model=str(tiny_dir / "reward_model"),
            demos=str(data_dir / "demos.jsonl"),
            prefs=str(data_dir / "prefs.jsonl"),
            max_iterations=iterations,
            config=SMALL | {"learning_rate": 1e-3, "save_steps": 2, "use_peft": lora, "lora_r": 4} | extra,
        )

    run(tmp_path / "straight", 4)
    run(tmp_path / "cut", 3)  # "interrupted" after iteration 3: iteration 3 is lost, checkpoint-2 is kept
    checkpoint = tmp_path / "cut" / "checkpoints" / "checkpoint-2"
    # a checkpoint holds what trains: with LoRA, the adapters (and the reward head), not the frozen base
    saved = [torch.load(checkpoint / f"trainable_weights_{i}.pt", weights_only=True) for i in (0, 1)]
    assert all(saved) and not list(checkpoint.glob("pytorch_model*"))
    frozen = [k for state in saved for k in state if "lora_" not in k and "score" not in k]
    assert bool(frozen) is not lora, frozen[:3]
    run(tmp_path / "cut", 4, resume_from_checkpoint=True)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]
    for name in ("policy", "reward_model"):  # with LoRA the policy is saved as its adapter
        weights = "adapter_model.safetensors" if lora and name == "policy" else "model.safetensors"
        straight = (tmp_path / "straight" / name / weights).read_bytes()
        resumed = (tmp_path / "cut" / name / weights).read_bytes()
        assert straight == resumed, name


def test_sample_groups_draws_every_group_in_one_generate_call(tiny_dir, data_dir, tmp_path):
    trainer = _trainer(tiny_dir, data_dir, tmp_path)
    model = trainer.accelerator.unwrap_model(trainer.policy)
    calls = []
    generate = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or generate(**kw)
    prompts = trainer.demos.column("prompt")
    one, three = trainer.policy_step.sample_groups([(prompts[:2], 1), (prompts[2:4], 3)])
    assert calls == [8]  # 2 x 1 + 2 x 3 sequences, one call
    assert one.prompts == prompts[:2] and one.num_samples == 1 and len(one.completion_ids) == 2
    assert three.prompts == [p for p in prompts[2:4] for _ in range(3)] and three.num_samples == 3
    assert len(three.completions) == len(three.prompt_ids) == len(three.completion_ids) == 6


@pytest.mark.parametrize("save_steps", [0, 2])
def test_aihf_draws_the_next_policy_samples_with_the_agent_answers_unless_a_checkpoint_comes_between(
    tiny_dir, data_dir, tmp_path, save_steps
):
    """The next iteration's policy samples come from the policy as the reward steps see it (no update in
    between), drawn in the same pass as the agent answers; not across a checkpoint (never saved)."""
    trainer = _trainer(tiny_dir, data_dir, tmp_path, max_iterations=4, save_steps=save_steps)
    step, drawn = trainer.policy_step, []
    sample = step.sample
    step.sample = lambda prompts, k, batch_size=None: (
        drawn.append((step.updates, len(prompts) * k)) or sample(prompts, k, batch_size)
    )
    trainer.train()
    policy, agent = 3 * 2, 6  # prompt_batch_size x num_generations; a reward step's demonstrations
    if save_steps:  # checkpoint after iteration 2: iteration 3 samples its own
        expected = [
            (0, policy),
            (1, agent + policy),
            (2, agent),
            (2, policy),
            (3, agent + policy),
            (4, agent),
        ]
    else:
        expected = [(0, policy), (1, agent + policy), (2, agent + policy), (3, agent + policy), (4, agent)]
    assert drawn == expected
    assert step.updates == 4 and trainer.ahead is None


def test_policy_step_refuses_samples_of_other_prompts(tiny_dir, data_dir, tmp_path):
    trainer = _trainer(tiny_dir, data_dir, tmp_path)
    prompts = trainer.demos.column("prompt")
    (samples,) = trainer.policy_step.sample_groups([(prompts[:3], 2)])
    with pytest.raises(ValueError, match="num_generations answers for each of the prompts"):
        trainer.policy_step(prompts[1:4], trainer.current_reward(), samples=samples)


def test_reward_scorer_uses_the_reward_models_own_tokenizer(tiny_dir):
    scorer = RewardScorer(
        load_reward_model(str(tiny_dir / "reward_model")), load_tokenizer(str(tiny_dir / "reward_model"))
    )
    scores = scorer(["The film was", "A"], [" good", " longer answer here"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_rlhf_runs_sft_then_reward_model_then_rl_with_data_named_in_the_config(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "rlhf"
    config = SMALL | {"sft_steps": 2, "reward_warmup_steps": 2, "learning_rate": 1e-3, "save_steps": 1}
    config |= {"save_total_limit": 1, "snapshot_steps": 1}
    config |= {"model": str(tiny_dir / "policy"), "reward_model": str(tiny_dir / "reward_model")}
    config |= {"demos": str(data_dir / "demos.jsonl"), "prefs": str(data_dir / "prefs.jsonl")}
    final = run_training("rlhf", None, str(out), max_iterations=2, config=config)
    assert (out / "sft" / "policy" / "config.json").exists()
    assert "sft/train_loss" in final and "reward_stage/train_loss" in final and final["step"] == 2
    sft = AutoModelForCausalLM.from_pretrained(out / "sft" / "policy").state_dict()
    policy = AutoModelForCausalLM.from_pretrained(out / "policy").state_dict()
    assert any(not torch.equal(sft[k], policy[k]) for k in sft)  # RL moved the policy on from the SFT model
    # Each stage checkpoints into its own directory, so rotation in one never deletes another's.
    for stage in ("", "sft/", "reward_stage/"):
        assert [p.name for p in (out / f"{stage}checkpoints").glob("checkpoint-*")] == ["checkpoint-2"], stage
    assert (out / "reward_stage" / "reward_model" / "config.json").exists()
    # snapshots count the RL stage's iterations only, and the last one is the final policy
    assert [step for step, _ in snapshot_dirs(out)] == [1, 2]
    assert not (out / "sft" / "snapshots").exists() and not (out / "reward_stage" / "snapshots").exists()
    last = AutoModelForCausalLM.from_pretrained(snapshot_dirs(out)[-1][1]).state_dict()
    assert all(torch.equal(last[k], policy[k]) for k in policy)


def test_rlhf_resumes_in_the_stage_where_it_stopped(tiny_dir, data_dir, tmp_path):
    """Killed in the reward stage after its checkpoint-2: SFT is not redone, the reward stage goes on
    from step 2, the RL stage starts; the result is the uninterrupted run's."""
    config = SMALL | {"sft_steps": 2, "reward_warmup_steps": 4, "learning_rate": 1e-3, "save_steps": 2}
    config |= {"reward_model": str(tiny_dir / "reward_model"), "logging_steps": 1}
    data = {"demos": str(data_dir / "demos.jsonl"), "prefs": str(data_dir / "prefs.jsonl")}

    def run(out, **extra):
        return run_training(
            "rlhf", str(tiny_dir / "policy"), str(out), max_iterations=2, config=config | extra, **data
        )

    straight = run(tmp_path / "straight")
    cut = tmp_path / "cut"
    run(cut)
    for lost in (
        "policy",
        "checkpoints",
        "metrics.jsonl",
        "reward_stage/reward_model",
        "reward_stage/checkpoints/checkpoint-4",
    ):
        path = cut / lost
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sft_written = (cut / "sft" / "policy" / "model.safetensors").stat().st_mtime_ns
    resumed = run(cut, resume_from_checkpoint=True)
    assert (cut / "sft" / "policy" / "model.safetensors").stat().st_mtime_ns == sft_written
    logged = [r["step"] for r in checkpoints.read_log(cut / "reward_stage" / "metrics.jsonl") if "loss" in r]
    assert logged == [1, 2, 3, 4]  # the records past checkpoint-2 were dropped, then written again
    for name in ("policy", "reward_stage/reward_model"):
        assert (cut / name / "model.safetensors").read_bytes() == (
            tmp_path / "straight" / name / "model.safetensors"
        ).read_bytes(), name
    assert resumed["sft/train_loss"] == straight["sft/train_loss"]


def test_rlhf_resume_refuses_a_damaged_stage_checkpoint_before_training(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "rlhf"
    config = SMALL | {"sft_steps": 2, "reward_warmup_steps": 2, "save_steps": 2}
    data = {"demos": str(data_dir / "demos.jsonl"), "prefs": str(data_dir / "prefs.jsonl")}
    args = ("rlhf", str(tiny_dir / "policy"), str(out))
    run_training(*args, reward_model=str(tiny_dir / "reward_model"), max_iterations=1, config=config, **data)
    shutil.rmtree(out / "sft" / "policy")
    (out / "sft" / "checkpoints" / "checkpoint-2" / checkpoints.MANIFEST).unlink()
    with pytest.raises(checkpoints.CheckpointError, match="sft/checkpoints/checkpoint-2"):
        run_training(
            *args,
            reward_model=str(tiny_dir / "reward_model"),
            max_iterations=1,
            config=config | {"resume_from_checkpoint": True},
            **data,
        )
    assert not (out / "sft" / "policy").exists()


@pytest.mark.parametrize(("policy_optimizer", "beta"), [("rloo", 0.0), ("online_dpo", 0.1)])
def test_policy_step_raises_a_frozen_python_reward(tiny_dir, data_dir, tmp_path, policy_optimizer, beta):
    """The lower level alone: 30 RL steps on 'share of vowels in the answer' lift it well above chance."""

    def vowels(prompts, completions):
        return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]

    config = AIHFConfig(
        output_dir=str(tmp_path / "rl"),
        max_iterations=30,
        learning_rate=1e-2,
        beta=beta,
        policy_optimizer=policy_optimizer,
        prompt_batch_size=3,
        num_generations=4,
        max_completion_length=8,
        report_to="none",
    )
    trainer = _rl_trainer(tiny_dir, data_dir, config, vowels)
    trainer.train()
    scores = [json.loads(line)["objective/scores"] for line in (tmp_path / "rl" / "metrics.jsonl").open()]
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert last > first + 0.15, (first, last)


def test_reward_model_with_its_own_tokenizer(tiny_dir, data_dir, tmp_path):
    """The reward model re-tokenises the text: a different vocabulary from the policy's is fine."""
    from aihf.lm.tiny import save_tiny_models

    other = save_tiny_models(
        tmp_path / "other", texts=["completely different words " * 20, "zebra quartz"], seed=1
    )
    assert (
        load_tokenizer(str(other / "reward_model")).get_vocab()
        != load_tokenizer(str(tiny_dir / "policy")).get_vocab()
    )
    out = tmp_path / "run"
    final = run_training(
        "aihf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(other / "reward_model"),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_iterations=2,
        config=SMALL | {"learning_rate": 1e-3},
    )
    assert all(math.isfinite(v) for v in final.values())
    saved = load_tokenizer(str(out / "reward_model"))
    assert saved.get_vocab() == load_tokenizer(str(other / "reward_model")).get_vocab()


def test_policy_step_logs_the_spread_of_scores_and_of_the_kl_penalty(tiny_dir, data_dir, tmp_path):
    """`policy/score_std` is the mean over prompts of the scores' std across the prompt's k samples."""
    scored = []

    def reward_fn(prompts, completions):
        scores = [float(len(c)) for c in completions]
        scored.append(scores)
        return scores

    config = AIHFConfig(output_dir=str(tmp_path / "rl"), max_iterations=1, **(SMALL | {"num_generations": 3}))
    trainer = _rl_trainer(tiny_dir, data_dir, config, reward_fn)
    prompts = trainer.prompt_data.column("prompt")[:3]
    metrics = trainer.policy_step(prompts, reward_fn)
    expected = torch.tensor(scored[0]).view(3, 3).std(1).mean().item()
    assert metrics["policy/score_std"] == pytest.approx(expected, rel=1e-5)
    assert expected > 0  # the check could fail: the sampled lengths differ within a group
    # before any update the policy is its reference: every sample's KL estimate, so its spread, is 0
    assert metrics["policy/kl_penalty_std"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(("alpha", "beta", "weight"), [(0.3, 0.1, 3.0), (0.3, 0.2, 1.5), (0.05, 0.05, 1.0)])
def test_reward_step_weighs_the_demonstration_term_by_the_papers_alpha_over_beta(
    tiny_dir, data_dir, tmp_path, monkeypatch, alpha, beta, weight
):
    """alpha is the paper's: grad L1 = (1/beta)(E_D[grad R] - E_pi[grad R]), so a beta sweep at one
    alpha halves the demonstration term's weight when beta doubles."""
    import aihf.lm.aihf_trainer as module

    seen, real = [], module.aihf_reward_loss

    def spy(**kwargs):
        seen.append(kwargs["alpha"])
        return real(**kwargs)

    monkeypatch.setattr(module, "aihf_reward_loss", spy)
    trainer = _trainer(tiny_dir, data_dir, tmp_path, alpha=alpha, beta=beta)
    trainer.reward_step()
    assert seen and all(a == pytest.approx(weight) for a in seen)


def test_alpha_without_a_kl_weight_is_refused_in_one_line():
    from aihf.errors import InputError

    assert AIHFConfig(alpha=0.0, beta=0.0).demo_weight == 0.0
    with pytest.raises(InputError, match=r"^aihf: alpha 0.1 needs beta > 0 \(the demonstration term weighs"):
        AIHFConfig(alpha=0.1, beta=0.0).demo_weight  # noqa: B018
