"""Evaluation during training (eval_strategy / eval_steps): held-out reward accuracy and gold reward / KL
in metrics.jsonl under eval/, checked inputs, and no effect on what is trained."""

import json

import pytest
import torch
from safetensors.torch import load_file

import aihf.cli
from aihf.errors import InputError
from aihf.lm.config import DirectAIHFConfig
from aihf.lm.data import prepare_text_data
from aihf.lm.direct import DirectAIHFTrainer
from aihf.lm.loop import EvalData
from aihf.lm.modeling import load_causal_lm, load_tokenizer
from aihf.lm.train import run_training

QUIET = {"report_to": "none", "learning_rate": 1e-2}
EVAL = {"eval_strategy": "steps", "eval_steps": 2}


def _log(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out):
    return load_file(str(out / "policy" / "model.safetensors"))


def _same_weights(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def test_direct_aihf_reports_the_implicit_reward_accuracy_the_loss_computes(tiny_dir, data_dir, tmp_path):
    """eval/rewards/* every eval_steps steps are the DPO loss's own rewards/* on the held-out pairs."""
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    prefs = prepare_text_data(data_dir / "prefs.jsonl", "prefs", tokenizer)
    config = DirectAIHFConfig(
        output_dir=str(tmp_path / "d"), alpha=0.0, max_steps=4, per_device_train_batch_size=2, **QUIET, **EVAL
    )
    trainer = DirectAIHFTrainer(load_causal_lm(str(tiny_dir / "policy")), tokenizer, config, prefs=prefs)
    trainer.add_evaluation(EvalData(prefs=prefs), str(tiny_dir / "policy"))
    trainer.train()
    evaluated = [r for r in _log(tmp_path / "d") if "eval/rewards/accuracies" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    trainer.policy.eval()
    with torch.no_grad():  # all six pairs in one batch through the loss: its metrics at the final weights
        _, metrics, _ = trainer.compute_loss(prefs.rows, [])
    assert evaluated[-1]["eval/rewards/accuracies"] == pytest.approx(metrics["rewards/accuracies"])
    assert evaluated[-1]["eval/rewards/margins"] == pytest.approx(metrics["rewards/margins"], rel=1e-4)
    assert evaluated[-1]["eval/rewards/margins"] > 0  # training on these pairs has separated them


@pytest.mark.parametrize("trainer", ["aihf", "direct-aihf", "self-play-aihf"])
def test_evaluation_does_not_change_training(trainer, tiny_dir, data_dir, tmp_path):
    """A seeded run gives the same final weights and training metrics with evaluation on and off."""
    args = {
        "trainer": trainer,
        "model": str(tiny_dir / "policy"),
        "prefs": str(data_dir / "prefs.jsonl"),
        "demos": str(data_dir / "demos.jsonl"),
    }
    if trainer == "aihf":
        limits = {
            "max_iterations": 3,
            "num_generations": 2,
            "prompt_batch_size": 2,
            "max_completion_length": 4,
        }
        args |= {"reward_model": str(tiny_dir / "reward_model"), "prompts": str(data_dir / "prompts.jsonl")}
    elif trainer == "self-play-aihf":  # the implicit reward against the current iterate pi_t
        limits = {
            "max_iterations": 2,
            "steps_per_iteration": 1,
            "max_completion_length": 4,
            "per_device_train_batch_size": 2,
        }
    else:
        limits = {"max_steps": 3, "per_device_train_batch_size": 2}
    runs = {}
    for name, extra in (("off", {}), ("on", EVAL | {"eval_gold": "vader", "eval_max_new_tokens": 4})):
        eval_args = {"eval_prefs": str(data_dir / "prefs.jsonl")} if extra else {}
        run_training(**args, **eval_args, out=str(tmp_path / name), config=QUIET | limits | extra)
        runs[name] = _log(tmp_path / name)
    assert _same_weights(_weights(tmp_path / "off"), _weights(tmp_path / "on"))
    [evaluated] = [r for r in runs["on"] if "eval/gold_reward_mean" in r]
    assert evaluated["step"] == 2 and evaluated["eval/n_prompts"] == 6  # the held-out pairs' prompts
    assert evaluated["eval/kl_to_ref"] != 0.0 and 0.0 <= evaluated["eval/rewards/accuracies"] <= 1.0
    for off, on in zip(runs["off"], runs["on"]):
        assert {k: v for k, v in on.items() if not k.startswith(("eval/", "train/tokens_per"))} == {
            k: v for k, v in off.items() if not k.startswith("train/tokens_per")
        }


def test_trl_baselines_report_their_evaluation_under_eval(tiny_dir, data_dir, tmp_path):
    """DPO: TRL's own held-out rewards/accuracies and our gold evaluation; reward: TRL's accuracy; SFT:
    the gold evaluation on --eval-prompts."""
    common = {"model": str(tiny_dir / "policy"), "prefs": str(data_dir / "prefs.jsonl")}
    config = (
        QUIET
        | EVAL
        | {"max_steps": 2, "per_device_train_batch_size": 2, "eval_gold": "vader", "eval_max_new_tokens": 4}
    )
    run_training("dpo", **common, eval_prefs=common["prefs"], out=str(tmp_path / "dpo"), config=config)
    logged = _log(tmp_path / "dpo")
    assert any("eval/rewards/accuracies" in r and r["step"] == 2 for r in logged)
    assert any("eval/gold_reward_mean" in r and r["step"] == 2 for r in logged)
    assert not any(k.startswith("eval_") for r in logged for k in r)
    reward = QUIET | EVAL | {"max_steps": 2, "per_device_train_batch_size": 2}
    common["model"] = str(tiny_dir / "reward_model")
    run_training("reward", **common, eval_prefs=common["prefs"], out=str(tmp_path / "rm"), config=reward)
    assert any("eval/accuracy" in r and r["step"] == 2 for r in _log(tmp_path / "rm"))
    sft = {"demos": str(data_dir / "demos.jsonl"), "eval_prompts": str(data_dir / "prompts.jsonl")}
    run_training("sft", str(tiny_dir / "policy"), str(tmp_path / "sft"), **sft, config=config)
    [evaluated] = [r for r in _log(tmp_path / "sft") if "eval/gold_reward_mean" in r]
    assert evaluated["step"] == 2 and evaluated["eval/kl_to_ref"] != 0.0  # against the loaded start


@pytest.mark.parametrize(
    ("trainer", "data", "config", "message"),
    [
        ("dpo", {}, EVAL, "eval_strategy 'steps' needs --eval-prefs"),
        ("sft", {"eval_prefs": "prefs"}, EVAL, "sft: learns no reward, so --eval-prefs does not apply"),
        ("reward", {}, EVAL | {"eval_gold": "vader"}, "reward: trains no policy, so eval_gold"),
        ("sft", {}, EVAL | {"eval_gold": "vader"}, "eval_gold needs prompts"),
        ("dpo", {"eval_prefs": "bad"}, EVAL, "bad.jsonl, line 2, field 'rejected': missing value"),
        ("dpo", {"eval_prompts": "none"}, EVAL | {"eval_gold": "vader"}, "none.jsonl"),
        ("dpo", {}, {"eval_strategy": "epoch"}, "field 'eval_strategy' = 'epoch'"),
        ("dpo", {}, EVAL | {"eval_steps": 0}, "field 'eval_steps' = 0"),
        ("dpo", {}, EVAL | {"eval_gold": 3}, "field 'eval_gold' = 3"),
    ],
)
def test_bad_evaluation_inputs_stop_before_training(
    trainer, data, config, message, tiny_dir, data_dir, tmp_path, jsonl
):
    jsonl(
        tmp_path / "bad.jsonl",
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
    )
    files = {
        "prefs": data_dir / "prefs.jsonl",
        "bad": tmp_path / "bad.jsonl",
        "none": tmp_path / "none.jsonl",
    }
    data = {k: str(files[v]) for k, v in data.items()}
    inputs = {"demos": str(data_dir / "demos.jsonl")} if trainer == "sft" else {"prefs": str(files["prefs"])}
    model = tiny_dir / ("reward_model" if trainer == "reward" else "policy")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("'", "'")):
        run_training(trainer, str(model), str(tmp_path / "out"), **inputs, **data, config=QUIET | config)
    assert not (tmp_path / "out").exists()


def test_cli_takes_eval_data_beside_the_training_data(tiny_dir, data_dir, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("eval_strategy: steps\nmax_steps: 1\nreport_to: none\nalpha: 0\n")
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", "direct-aihf", "--model_name_or_path", str(tiny_dir / "policy")]
    argv += [
        "--prefs",
        str(data_dir / "prefs.jsonl"),
        "--config",
        str(tmp_path / "c.yaml"),
        "--output_dir",
        str(out),
    ]
    assert aihf.cli.main([*argv, "--eval-prefs", str(tmp_path / "missing.jsonl")]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "missing.jsonl" in err and not out.exists()
    assert aihf.cli.main([*argv, "--eval-prefs", str(data_dir / "prefs.jsonl")]) == 0
    assert "eval/rewards/accuracies" in _log(out)[-1]


def test_rlhf_evaluates_its_reward_in_the_reward_stage_and_the_gold_in_the_rl_stage(
    tiny_dir, data_dir, tmp_path
):
    config = QUIET | EVAL | {"eval_gold": "vader", "eval_max_new_tokens": 4, "max_iterations": 2}
    config |= {
        "reward_warmup_steps": 2,
        "num_generations": 2,
        "prompt_batch_size": 2,
        "max_completion_length": 4,
    }
    prefs = str(data_dir / "prefs.jsonl")
    out = tmp_path / "rlhf"
    run_training(
        "rlhf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(tiny_dir / "reward_model"),
        prefs=prefs,
        eval_prefs=prefs,
        config=config,
    )
    assert any("eval/accuracy" in r and r["step"] == 2 for r in _log(out / "reward_stage"))
    [evaluated] = [r for r in _log(out) if "eval/gold_reward_mean" in r]
    assert evaluated["step"] == 2 and "eval/rewards/accuracies" not in evaluated


def test_lora_runs_measure_kl_against_the_starting_model(tiny_dir, data_dir, tmp_path):
    """With LoRA no frozen copy is kept: the reference is the starting model, loaded for evaluation."""
    config = (
        QUIET
        | EVAL
        | {"eval_gold": "vader", "eval_max_new_tokens": 4, "max_steps": 2, "per_device_train_batch_size": 2}
    )
    config |= {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "alpha": 0.0, "learning_rate": 0.1}
    prefs = str(data_dir / "prefs.jsonl")
    out = tmp_path / "lora"
    run_training(
        "direct-aihf", str(tiny_dir / "policy"), str(out), prefs=prefs, eval_prefs=prefs, config=config
    )
    [evaluated] = [r for r in _log(out) if "eval/gold_reward_mean" in r]
    assert evaluated["eval/kl_to_ref"] != 0.0 and evaluated["eval/rewards/margins"] != 0.0


def test_held_out_data_without_eval_strategy_is_named_in_a_warning(tiny_dir, data_dir, tmp_path, caplog):
    """As TRL: eval_strategy 'no' (the default) does not evaluate; the unused data is named, once."""
    prefs = str(data_dir / "prefs.jsonl")
    config = QUIET | {"max_steps": 1, "alpha": 0.0}
    run_training(
        "direct-aihf",
        str(tiny_dir / "policy"),
        str(tmp_path / "o"),
        prefs=prefs,
        eval_prefs=prefs,
        config=config,
    )
    assert "direct-aihf: --eval-prefs given but eval_strategy is 'no'" in caplog.text
    assert not any(k.startswith("eval/") for r in _log(tmp_path / "o") for k in r)


def test_trl_evaluation_does_not_change_training(tiny_dir, data_dir, tmp_path):
    """DPO through TRL trains the same weights with its held-out evaluation and our gold callback on."""
    prefs = str(data_dir / "prefs.jsonl")
    config = QUIET | {"max_steps": 3, "per_device_train_batch_size": 2}
    gold = EVAL | {"eval_gold": "vader", "eval_max_new_tokens": 4}
    run_training("dpo", str(tiny_dir / "policy"), str(tmp_path / "off"), prefs=prefs, config=config)
    run_training(
        "dpo",
        str(tiny_dir / "policy"),
        str(tmp_path / "on"),
        prefs=prefs,
        eval_prefs=prefs,
        config=config | gold,
    )
    assert any("eval/gold_reward_mean" in r for r in _log(tmp_path / "on"))
    assert _same_weights(_weights(tmp_path / "off"), _weights(tmp_path / "on"))
