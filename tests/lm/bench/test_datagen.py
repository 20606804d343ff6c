import json
import shutil

import pytest

from aihf.errors import InputError
from aihf.lm.bench import datagen
from aihf.lm.tiny import save_tiny_models


def pool_of(golds, prompts=1):
    return [
        {"prompt": f"p{i % prompts}", "completion": f" c{i}", "gold": float(g), "checkpoint": 0}
        for i, g in enumerate(golds)
    ]


def test_bucket_splits_by_gold_rank_into_thirds():
    rows = datagen.bucket(pool_of([5, 1, 9, 3, 7, 2, 8, 4, 6]))
    by_bucket = {b: sorted(r["gold"] for r in rows if r["bucket"] == b) for b in ("low", "medium", "high")}
    assert by_bucket == {"low": [1, 2, 3], "medium": [4, 5, 6], "high": [7, 8, 9]}
    with pytest.raises(InputError):
        datagen.bucket(pool_of([1, 2]))


def test_datasets_take_demos_from_high_and_pairs_from_low_and_medium():
    golds = [(i * 37) % 101 / 100 for i in range(1200)]
    data = datagen.build_datasets(
        pool_of(golds, prompts=200), n_demos=40, n_prefs=40, n_heldout_prefs=10, seed=1
    )
    cut = sorted(golds)[2 * len(golds) // 3]
    assert len(data["demos"]) == 40 and len(data["prefs"]) == 40 and len(data["prefs_heldout"]) == 10
    assert all(d["gold"] >= cut for d in data["demos"])
    for p in data["prefs"] + data["prefs_heldout"]:
        assert p["rejected_gold"] < p["chosen_gold"] <= cut
    train_prompts = {d["prompt"] for d in data["demos"]} | {p["prompt"] for p in data["prefs"]}
    assert not train_prompts & {p["prompt"] for p in data["prefs_heldout"]}
    table = datagen.quality_table(data["demos"], data["prefs"])
    assert table["non_preferred"]["mean"] < table["preferred"]["mean"] < table["demonstrations"]["mean"]
    assert "| demonstrations |" in datagen.quality_markdown(table)
    assert datagen.table3_ordering(
        table
    ) and "ordering demonstrations > preferred > non-preferred: holds" in (datagen.quality_markdown(table))
    flat = table | {"demonstrations": table["non_preferred"]}
    assert not datagen.table3_ordering(flat) and "DOES NOT HOLD" in datagen.quality_markdown(flat)


def test_extra_pairs_per_prompt_are_disjoint_and_keep_the_one_pair_data_as_a_prefix():
    golds = [(i * 37) % 101 / 100 for i in range(1200)]
    pool = pool_of(golds, prompts=100)  # 12 completions per prompt
    one = datagen.build_datasets(pool, n_demos=30, n_prefs=500, n_heldout_prefs=5, seed=2)
    many = datagen.build_datasets(
        pool, n_demos=30, n_prefs=500, n_heldout_prefs=5, seed=2, pairs_per_prompt=3
    )
    n_first = len(one["prefs"])
    assert n_first == 95 and n_first < len(many["prefs"]) <= 3 * n_first
    assert many["prefs"][:n_first] == one["prefs"]
    assert many["demos"] == one["demos"] and many["prefs_heldout"] == one["prefs_heldout"]
    first_pass_prompts = {p["prompt"] for p in one["prefs"]}
    used: dict[str, set[str]] = {}
    for pair in many["prefs"]:
        assert pair["prompt"] in first_pass_prompts and pair["rejected_gold"] < pair["chosen_gold"]
        seen = used.setdefault(pair["prompt"], set())
        assert not seen & {pair["chosen"], pair["rejected"]}  # no completion in two pairs of a prompt
        seen |= {pair["chosen"], pair["rejected"]}
    assert max(sum(p["prompt"] == q for p in many["prefs"]) for q in first_pass_prompts) == 3


def test_quality_table_by_hand():
    demos = [{"gold": 0.8}, {"gold": 0.6}]
    prefs = [{"chosen_gold": 0.2, "rejected_gold": -0.4}, {"chosen_gold": 0.0, "rejected_gold": -0.2}]
    table = datagen.quality_table(demos, prefs)
    assert table["demonstrations"] == pytest.approx({"mean": 0.7, "std": 0.02**0.5, "n": 2})  # ddof=1
    assert table["preferred"]["mean"] == pytest.approx(0.1)
    assert table["non_preferred"] == pytest.approx({"mean": -0.3, "std": 0.02**0.5, "n": 2})


def test_generate_data_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    prompts = [f"The film number {i} was" for i in range(24)]
    monkeypatch.setattr(datagen, "load_prompts", lambda split: prompts)
    monkeypatch.setattr(datagen, "train_prompts", lambda limit, seed: prompts[:8])

    def gold(ps, cs):
        return [float(len(c)) for c in cs]

    cfg = datagen.DataGenConfig(
        rl_steps=2,
        save_every=1,
        rl_batch_size=4,
        num_generations=2,
        max_new_tokens=4,
        samples_per_prompt=2,
        n_demos=6,
        n_prefs=6,
        n_heldout_prefs=2,
    )
    summary = datagen.generate_data(tmp_path / "out", base, gold, cfg)
    out = tmp_path / "out"
    demos = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines()]
    prefs = [json.loads(line) for line in (out / "prefs.jsonl").read_text().splitlines()]
    assert set(demos[0]) == {"prompt", "completion"} and set(prefs[0]) == {"prompt", "chosen", "rejected"}
    assert len(demos) == 6 and 1 <= len(prefs) <= 6
    assert list(summary["checkpoint_gold_mean"]) == ["policy", "checkpoint-1", "checkpoint-2"]
    assert summary["pool_size"] <= 3 * 2 * len(prompts)
    assert (out / "quality.md").read_text().startswith("| data |")

    def no_rl(*args, **kwargs):
        raise AssertionError("the finished gold-RL run should have been reused")

    monkeypatch.setattr(datagen, "gold_rl", no_rl)  # rebuilding the data sets reuses the checkpoints
    again = datagen.generate_data(tmp_path / "again", base, gold, cfg, work_dir=out / "gold_rl")
    assert (
        again["checkpoint_gold_mean"] == summary["checkpoint_gold_mean"] and again["gold_rl_seconds"] is None
    )


def test_chat_preset_path_renders_prompts_trains_lora_in_bf16_and_reuses_the_pool(tmp_path, monkeypatch):
    """The SmolLM2 preset's code path (instruction + chat template, LoRA adapter checkpoints, bf16) on a
    tiny model whose tokenizer is given a chat template."""
    from transformers import AutoTokenizer

    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tokenizer.save_pretrained(base)
    texts = [f"the film number {i} was" for i in range(12)]
    monkeypatch.setattr(datagen, "load_prompts", lambda split: texts)
    monkeypatch.setattr(datagen, "train_prompts", lambda limit, seed: texts[:8])
    seen: list[str] = []

    def gold(ps, cs):
        seen.extend(ps)
        return [float(len(c)) for c in cs]

    small = {"rl_steps": 2, "save_every": 1, "rl_batch_size": 4, "num_generations": 2, "max_new_tokens": 4}
    cfg = datagen.DataGenConfig(**{**datagen.PRESETS["smollm2"], "instruction": "Go on: {text}", **small})
    cfg.n_demos, cfg.n_prefs, cfg.n_heldout_prefs, cfg.samples_per_prompt = 4, 4, 1, 2
    out = tmp_path / "out"
    datagen.generate_data(out, base, gold, cfg)
    rendered = "<user>Go on: the film number 0 was\n<assistant>"
    assert rendered in seen  # the gold reward sees the prompt the policy sampled from
    ckpt = out / "gold_rl" / "checkpoint-2"
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "model.safetensors").is_file()
    tests = [json.loads(line)["prompt"] for line in (out / "test_prompts.jsonl").read_text().splitlines()]
    assert tests[0] == rendered
    demos = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines()]
    assert all(d["prompt"].startswith("<user>Go on: ") for d in demos)
    # the merged checkpoint differs from the base: the adapter was trained
    policy, _ = datagen.load_checkpoint(ckpt, base)
    plain, _ = datagen.load_checkpoint(base, base)
    assert any(
        (a - b).abs().max() > 0 for a, b in zip(policy.state_dict().values(), plain.state_dict().values())
    )
    # the pool: the base and the first checkpoint only (pool_checkpoints=1), files named by how sampled
    pools = sorted(p.name for p in (out / "gold_rl").glob("pool-*.jsonl"))
    assert pools == ["pool-0-x2-n12.jsonl", "pool-1-x2-n12.jsonl"]
    summary = json.loads((out / "quality.json").read_text())
    assert list(summary["checkpoint_gold_mean"]) == ["policy", "checkpoint-1"]
    assert list(summary["gold_rl_reward_by_step"]) == ["1", "2"]

    def no_sampling(*args, **kwargs):
        raise AssertionError("saved pool rows should have been reused")

    monkeypatch.setattr("aihf.lm.evaluation.sample", no_sampling)
    again = datagen.generate_data(tmp_path / "again", base, gold, cfg, work_dir=out / "gold_rl")
    assert again["pool_size"] == sum(
        len(p.read_text().splitlines()) for p in (out / "gold_rl").glob("pool-*")
    )


def test_an_interrupted_gold_rl_run_continues_from_its_newest_checkpoint(tmp_path):
    """Killed after checkpoint-2 of 4: the rerun goes on from there and ends where an uninterrupted
    run ends (optimiser, schedule and RNG come back with the checkpoint)."""
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    prompts = [f"The film number {i} was" for i in range(8)]

    def gold(ps, cs):
        return [float(len(c)) for c in cs]

    small = {"rl_steps": 4, "save_every": 2, "rl_batch_size": 4, "num_generations": 2, "max_new_tokens": 4}
    cfg = datagen.DataGenConfig(**small)
    straight = datagen.gold_rl(base, tmp_path / "straight", gold, prompts, cfg)
    cut = tmp_path / "cut"
    datagen.gold_rl(base, cut, gold, prompts, cfg)
    shutil.rmtree(cut / "checkpoint-4")  # as if the run had died between its two checkpoints
    (cut / "gold_rl_log.json").unlink()
    resumed = datagen.gold_rl(base, cut, gold, prompts, cfg)
    assert (
        [p.name for p in resumed] == [p.name for p in straight] == ["policy", "checkpoint-2", "checkpoint-4"]
    )
    weights = "checkpoint-4/model.safetensors"
    assert (cut / weights).read_bytes() == (tmp_path / "straight" / weights).read_bytes()
    log = json.loads((cut / "gold_rl_log.json").read_text())
    assert [row["step"] for row in log] == [2, 4]  # step 2's record came back with checkpoint-2
    assert (cut / weights).read_bytes() != (cut / "checkpoint-2/model.safetensors").read_bytes()  # it trained


def test_the_v2_preset_starts_the_assistants_turn_with_the_text(tmp_path):
    from transformers import AutoTokenizer

    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = (  # SmolLM2's turn markers
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    v2 = datagen.DataGenConfig(**datagen.PRESETS["smollm2-v2"])
    assert v2.instruction == datagen.PRESETS["smollm2"]["instruction"] and v2.response_prefix == "{text}"
    [prompt] = datagen.render_prompts(["Most people need"], tokenizer, v2.instruction, v2.response_prefix)
    assert prompt == (
        "<|im_start|>user\nContinue this text with one short sentence: Most people need<|im_end|>\n"
        "<|im_start|>assistant\nMost people need"
    )
    [v1] = datagen.render_prompts(["Most people need"], tokenizer, datagen.PRESETS["smollm2"]["instruction"])
    assert v1.endswith("<|im_start|>assistant\n")
    from aihf.lm.gold_v2 import prompt_text

    assert prompt_text(prompt) == "Most people need"  # gold v2 reads the text from the user turn


def test_resume_checkpoints_in_between_leave_the_pool_at_multiples_of_save_every(tmp_path):
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    prompts = [f"The film number {i} was" for i in range(8)]
    small = {"rl_steps": 4, "save_every": 2, "rl_batch_size": 4, "num_generations": 2, "max_new_tokens": 4}
    cfg = datagen.DataGenConfig(**small, resume_every=1)
    got = datagen.gold_rl(base, tmp_path / "rl", lambda ps, cs: [float(len(c)) for c in cs], prompts, cfg)
    assert [p.name for p in got] == ["policy", "checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "rl" / "checkpoint-3").is_dir()  # a finer point to resume from
