"""Loading (dtype, attention, accelerator first, reference loaded), LoRA adapters saved and loaded
everywhere a model is taken, model cards, the Hub push (network mocked) and `aihf lm generate`."""

import json
from pathlib import Path

import pytest
import torch
import yaml

import aihf.cli
from aihf.lm import modeling, runtime
from aihf.lm.config import DirectAIHFConfig
from aihf.lm.modeling import load_causal_lm, load_model, model_init_kwargs
from aihf.lm.train import run_training

FAST = {"per_device_train_batch_size": 3, "learning_rate": 1e-2, "report_to": "none"}
LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8}


@pytest.fixture(autouse=True)
def lm_cli_only(monkeypatch):
    monkeypatch.setattr(aihf.cli, "DOMAINS", ("aihf.lm.cli",))


def _cli(capsys, *argv):
    """(exit code, stdout, stderr lines) of `aihf lm ARGV`."""
    code = aihf.cli.main(["lm", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lora_run(tiny_dir, data_dir, tmp_path_factory):
    """A 2-step LoRA Direct AIHF run through the CLI, with merged weights also saved."""
    root = tmp_path_factory.mktemp("lora")
    config = root / "lora.yaml"
    config.write_text(yaml.safe_dump(FAST | LORA | {"save_merged": True}))
    argv = ["lm", "train", "--trainer", "direct-aihf", "--model_name_or_path", str(tiny_dir / "policy")]
    argv += ["--demos", str(data_dir / "demos.jsonl"), "--prefs", str(data_dir / "prefs.jsonl")]
    argv += ["--config", str(config), "--max-steps", "2", "--output_dir", str(root / "out")]
    assert aihf.cli.main(argv) == 0
    return root / "out"


# --- loading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "built"),
    [
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("float32", torch.float32),
        ("auto", torch.float32),  # the checkpoint's own: the tiny model is saved in float32
    ],
)
def test_a_model_is_built_in_the_configs_dtype_and_attention(tiny_dir, dtype, built):
    config = DirectAIHFConfig(dtype=dtype, attn_implementation="eager", report_to="none")
    model = load_causal_lm(str(tiny_dir / "policy"), model_init_kwargs(config))
    assert {p.dtype for p in model.parameters()} == {built}
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"dtype": "float64"}, "dtype"),
        ({"attn_implementation": "flash"}, "attn_implementation"),
        ({"push_to_hub": True}, "hub_model_id"),
        ({"hub_model_id": "no-slash"}, "hub_model_id"),
        ({"save_merged": "yes"}, "save_merged"),
    ],
)
def test_a_bad_loading_or_output_field_is_one_line_exit_2_before_any_work(
    tiny_dir, data_dir, tmp_path, capsys, values, field
):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(FAST | values))
    out = tmp_path / "out"
    code, _, err = _cli(
        capsys,
        "train",
        "--trainer",
        "dpo",
        "--model_name_or_path",
        tiny_dir / "policy",
        "--prefs",
        data_dir / "prefs.jsonl",
        "--config",
        config,
        "--output_dir",
        out,
    )
    assert code == 2 and len(err) == 1 and field in err[0], err
    assert not (out / "policy").exists()


def test_the_accelerator_exists_before_the_models_load_and_the_reference_is_loaded_not_copied(
    tiny_dir, data_dir, tmp_path, monkeypatch
):
    """ZeRO-3 builds a model sharded only if accelerate's DeepSpeed config exists when it loads; the
    reference pi_0 is loaded from the policy's source in the config's dtype, never deep-copied."""
    events = []
    make_accelerator, load = runtime.make_accelerator, modeling.load_causal_lm

    def recorded_accelerator(config):
        events.append("accelerator")
        return make_accelerator(config)

    def recorded_load(path, init=None):
        events.append(("load", path, (init or {}).get("dtype")))
        return load(path, init)

    def no_copy(model):
        raise AssertionError("the reference was copied")

    monkeypatch.setattr(runtime, "make_accelerator", recorded_accelerator)
    monkeypatch.setattr(modeling, "load_causal_lm", recorded_load)
    monkeypatch.setattr(runtime, "frozen_copy", no_copy)
    policy = str(tiny_dir / "policy")
    config = FAST | {"dtype": "bfloat16", "alpha": 0.0}
    run_training(
        "direct-aihf",
        policy,
        str(tmp_path / "out"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=1,
        config=config,
    )
    source = str(Path(policy).resolve())
    assert events == ["accelerator", ("load", policy, torch.bfloat16), ("load", source, torch.bfloat16)]


def test_trl_baselines_load_the_model_after_their_arguments_set_up_deepspeed(
    tiny_dir, data_dir, tmp_path, monkeypatch
):
    """TRL's arguments install accelerate's DeepSpeed config (ZeRO-3 init) when they are made: the
    model must load after them, in the config's dtype."""
    from aihf.lm import baselines

    events = []
    trl_args, load = baselines.trl_args, baselines.load_causal_lm
    monkeypatch.setattr(baselines, "trl_args", lambda *a, **kw: events.append("args") or trl_args(*a, **kw))

    def recorded_load(path, init=None):
        events.append(("load", (init or {}).get("dtype")))
        return load(path, init)

    monkeypatch.setattr(baselines, "load_causal_lm", recorded_load)
    run_training(
        "sft",
        str(tiny_dir / "policy"),
        str(tmp_path / "out"),
        demos=str(data_dir / "demos.jsonl"),
        max_steps=1,
        config=FAST | {"dtype": "bfloat16", "learning_rate": 1e-4},
    )
    assert events == ["args", ("load", torch.bfloat16)]


def test_with_lora_there_is_no_reference_model(tiny_dir, data_dir, tmp_path, monkeypatch):
    loads = []
    load = modeling.load_causal_lm
    monkeypatch.setattr(
        modeling, "load_causal_lm", lambda path, init=None: loads.append(path) or load(path, init)
    )
    run_training(
        "direct-aihf",
        str(tiny_dir / "policy"),
        str(tmp_path / "out"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=1,
        config=FAST | LORA | {"alpha": 0.0},
    )
    assert loads == [str(tiny_dir / "policy")]  # the policy only: pi_0 is the base, adapter disabled


def test_the_zero3_accelerate_config_builds_models_sharded():
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "configs" / "accelerate" / "deepspeed_zero3.yaml").read_text())
    assert config["deepspeed_config"]["zero_stage"] == 3
    assert config["deepspeed_config"]["zero3_init_flag"] is True


# --- adapters ----------------------------------------------------------------------------------------


def test_a_lora_run_saves_its_adapter_naming_the_base_and_merged_weights_on_request(lora_run, tiny_dir):
    from transformers import AutoModelForCausalLM

    policy = lora_run / "policy"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in policy.iterdir()
    }
    assert not (policy / "model.safetensors").exists()
    base = json.loads((policy / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((tiny_dir / "policy").resolve())
    merged = AutoModelForCausalLM.from_pretrained(lora_run / "policy_merged").state_dict()
    from_adapter = load_causal_lm(str(policy)).state_dict()
    assert set(merged) == set(from_adapter)
    assert all(torch.allclose(merged[k], from_adapter[k], atol=1e-6) for k in merged)
    base_weights = load_causal_lm(str(tiny_dir / "policy")).state_dict()
    assert any(not torch.equal(base_weights[k], merged[k]) for k in merged)  # the adapter trained


def test_peft_loads_the_adapter_over_its_base(lora_run):
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(lora_run / "policy")
    merged = model.merge_and_unload().state_dict()
    ours = load_causal_lm(str(lora_run / "policy")).state_dict()
    assert all(torch.allclose(merged[k], ours[k], atol=1e-6) for k in ours)


def test_the_model_card_says_method_base_data_command_metrics_config_and_versions(lora_run, tiny_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(lora_run / "policy" / "README.md")
    assert card.data.library_name == "peft" and "direct-aihf" in card.data.tags
    text = card.text
    assert "**direct-aihf**" in text and str(tiny_dir / "policy") in text
    assert "- demos: `" in text and "(6 rows)" in text and "- prefs: `" in text
    assert "aihf lm train --trainer direct-aihf" in text and "--max-steps 2" in text
    logged = json.loads((lora_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"| loss | {logged['loss']:.6g} |" in text
    assert "use_peft: true" in text and "save_merged: true" in text
    assert "- peft: " in text and "- transformers: " in text
    merged_card = ModelCard.load(lora_run / "policy_merged" / "README.md")
    assert merged_card.data.library_name == "transformers"


def test_an_adapter_is_a_model_for_train_eval_and_generate(lora_run, tiny_dir, data_dir, tmp_path, capsys):
    adapter = lora_run / "policy"
    code, _, err = _cli(
        capsys,
        "train",
        "--trainer",
        "sft",
        "--model_name_or_path",
        adapter,
        "--demos",
        data_dir / "demos.jsonl",
        "--max-steps",
        "1",
        "--output_dir",
        tmp_path / "sft",
    )
    assert code == 0, err
    code, out, err = _cli(
        capsys,
        "eval",
        "--policy",
        adapter,
        "--reference",
        tiny_dir / "policy",
        "--prompts",
        data_dir / "prompts.jsonl",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, err
    assert "gold_reward_mean" in json.loads(out[out.index("{") :])
    code, out, err = _cli(
        capsys, "generate", "--policy", adapter, "--prompt", "The film was", "--max-new-tokens", "4"
    )
    assert code == 0 and len(out.splitlines()) == 1, err


def test_an_adapter_whose_base_is_missing_is_one_line(lora_run, tmp_path, capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "policy", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, _, err = _cli(capsys, "generate", "--policy", adapter, "--prompt", "The film was")
    assert code == 2 and len(err) == 1 and "its base model" in err[0] and "gone" in err[0], err


# --- the Hub -------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_the_saved_policy_with_its_card(tiny_dir, data_dir, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id)))

    def upload_folder(self, repo_id, folder_path, **kw):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls.append(("upload", repo_id, folder_path, files))
        assert "direct-aihf" in (Path(folder_path) / "README.md").read_text()

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    config = FAST | LORA | {"alpha": 0.0, "push_to_hub": True, "hub_model_id": "someone/smol-aihf"}
    run_training(
        "direct-aihf",
        str(tiny_dir / "policy"),
        str(out),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=1,
        config=config,
    )
    assert calls[0] == ("create", "someone/smol-aihf")
    assert calls[1][:3] == ("upload", "someone/smol-aihf", str(out / "policy"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(calls[1][3])
    assert len(calls) == 2


# --- generate ------------------------------------------------------------------------------------------


def test_generate_is_seeded_and_writes_jsonl(tiny_dir, data_dir, tmp_path, capsys):
    policy = tiny_dir / "policy"
    args = ["generate", "--policy", policy, "--prompts", data_dir / "prompts.jsonl", "--num-samples", "2"]
    args += ["--max-new-tokens", "6"]
    code, first, _ = _cli(capsys, *args, "--seed", "3")
    code2, again, _ = _cli(capsys, *args, "--seed", "3")
    code3, other, _ = _cli(capsys, *args, "--seed", "4")
    assert code == code2 == code3 == 0
    rows = [json.loads(line) for line in first.splitlines()]
    assert len(rows) == 12 and rows[0]["prompt"] == rows[1]["prompt"] == "The film was"
    assert first == again and first != other
    out = tmp_path / "completions.jsonl"
    assert _cli(capsys, *args, "--seed", "3", "--out", out)[0] == 0
    assert out.read_text() == first


def test_generate_wraps_prompts_in_the_chat_template_unless_raw(tiny_dir, tmp_path, capsys, monkeypatch):
    seen = []
    sample = modeling.sample_completions

    def recorded(model, tokenizer, prompts, *args, **kwargs):
        seen.append(list(prompts))
        return sample(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(modeling, "sample_completions", recorded)
    model, tokenizer = load_model(tiny_dir / "policy")
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    )
    chat_policy = tmp_path / "chat"
    model.save_pretrained(chat_policy)
    tokenizer.save_pretrained(chat_policy)
    for extra in ([], ["--raw"]):
        assert (
            _cli(
                capsys, "generate", "--policy", chat_policy, "--prompt", "Hi", "--max-new-tokens", "2", *extra
            )[0]
            == 0
        )
    assert seen == [["<user>Hi<assistant>"], ["Hi"]]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--prompt TEXT"),
        (["--prompts", "missing.jsonl"], "missing.jsonl"),
        (["--prompt", "x", "--temperature", "0"], "--temperature"),
        (["--prompt", "x", "--num-samples", "0"], "--num-samples"),
        (["--prompt", "x", "--top-p", "1.5"], "--top-p"),
    ],
)
def test_generate_refuses_bad_input_with_one_line(tiny_dir, capsys, args, says):
    code, out, err = _cli(capsys, "generate", "--policy", tiny_dir / "policy", *args)
    assert code == 2 and len(err) == 1 and says in err[0] and not out, err


def test_rlhfs_policy_adapter_names_its_sft_stage_and_loads_through_the_chain(tiny_dir, data_dir, tmp_path):
    """RLHF trains its policy adapter on the SFT stage's policy (itself an adapter): the adapter names
    that stage as its base, and aihf's loader follows the chain to a plain model."""
    out = tmp_path / "rlhf"
    config = FAST | LORA | {"prompt_batch_size": 2, "num_generations": 2, "max_completion_length": 4}
    config |= {"sft_steps": 1, "reward_warmup_steps": 1}
    run_training(
        "rlhf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(tiny_dir / "reward_model"),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_iterations=1,
        config=config,
    )
    base = json.loads((out / "policy" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((out / "sft" / "policy").resolve())
    assert (out / "sft" / "policy" / "adapter_config.json").is_file()
    policy, _ = load_model(out / "policy")
    assert not any("lora_" in name for name, _ in policy.named_parameters())
    sft = load_causal_lm(str(out / "sft" / "policy")).state_dict()
    assert any(not torch.equal(sft[k], v) for k, v in policy.state_dict().items())  # RL moved it
