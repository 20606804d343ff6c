import contextlib
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import aihf.cli
from aihf.lm.methods import METHODS

FAST = "per_device_train_batch_size: 3\nlearning_rate: 0.001\nreport_to: none\n"
FAST_RL = FAST + "prompt_batch_size: 2\nnum_generations: 2\nmax_completion_length: 5\n"
FAST_SELF_PLAY = FAST + "steps_per_iteration: 1\nmax_completion_length: 5\n"
DATA = {  # trainer: the data this test gives it (the registry says what it writes)
    "aihf": ("demos", "prefs", "prompts"),
    "rlhf": ("prefs", "prompts"),
    "direct-aihf": ("demos", "prefs"),
    "self-play-aihf": ("demos", "prefs"),
    "spin": ("demos",),
    "sft": ("demos",),
    "reward": ("prefs",),
    "dpo": ("prefs",),
    "ipo": ("prefs",),
    "rpo": ("prefs",),
    "orpo": ("prefs",),
}


def test_every_registered_method_is_tested():
    assert sorted(DATA) == sorted(METHODS)


@pytest.fixture(autouse=True)
def lm_cli_only(monkeypatch):
    """The CLI with only the lm domain, whatever other domains this checkout has."""
    monkeypatch.setattr(aihf.cli, "DOMAINS", ("aihf.lm.cli",))


def _changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("trainer", sorted(DATA))
def test_every_trainer_runs_changes_weights_and_logs(trainer, tiny_dir, data_dir, tmp_path, capsys):
    data, outputs = DATA[trainer], METHODS[trainer].outputs
    yaml = {"aihf": FAST_RL, "rlhf": FAST_RL, "self-play-aihf": FAST_SELF_PLAY, "spin": FAST_SELF_PLAY}
    (tmp_path / "fast.yaml").write_text(yaml.get(trainer, FAST))
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", trainer, "--model_name_or_path", str(tiny_dir / "policy")]
    argv += ["--output_dir", str(out), "--reward-model", str(tiny_dir / "reward_model")]
    argv += ["--config", str(tmp_path / "fast.yaml")]
    argv += ["--max-iterations", "2", "--max-steps", "2"]
    for name in data:
        argv += [f"--{name}", str(data_dir / f"{name}.jsonl")]
    assert aihf.cli.main(argv) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final_metrics"]
    assert final and all(math.isfinite(v) for v in final.values())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(v) for r in records for v in r.values())
    loaders = {"policy": AutoModelForCausalLM, "reward_model": AutoModelForSequenceClassification}
    for name in ("policy", "reward_model"):
        written = [o for o in outputs if Path(o).name == name]
        if written:
            before = loaders[name].from_pretrained(tiny_dir / name).state_dict()
            assert _changed(before, loaders[name].from_pretrained(out / written[0]).state_dict()), name
        else:
            assert not (out / name).exists()


def test_bad_data_stops_before_training_with_one_line(tiny_dir, data_dir, tmp_path, capsys, jsonl):
    bad = jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
    )
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", "dpo"]
    argv += ["--model_name_or_path", str(tiny_dir / "policy"), "--prefs", str(bad)]
    assert aihf.cli.main([*argv, "--output_dir", str(out)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()  # the error line and nothing else
    assert err.startswith("aihf lm train: error: ")
    assert "prefs.jsonl, line 2, field 'rejected': missing value" in err
    assert not out.exists()


def test_unknown_config_key_and_missing_data_are_input_errors(tiny_dir, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("learning_rat: 0.1\n")
    base = ["lm", "train"]
    base += ["--model_name_or_path", str(tiny_dir / "policy"), "--output_dir", str(tmp_path / "o")]
    assert aihf.cli.main([*base, "--trainer", "sft", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "unknown keys ['learning_rat']" in capsys.readouterr().err
    assert aihf.cli.main([*base, "--trainer", "dpo"]) == 2
    assert "dpo: needs --prefs" in capsys.readouterr().err


def test_tiny_model_command(tmp_path):
    assert aihf.cli.main(["lm", "tiny-model", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "policy" / "config.json").exists()
    assert (tmp_path / "m" / "reward_model" / "config.json").exists()


def test_use_vllm_without_vllm_is_a_clear_input_error(tiny_dir, data_dir, tmp_path, capsys):
    pytest.importorskip("trl")
    from trl.import_utils import is_vllm_available

    if is_vllm_available():
        pytest.skip("vLLM is installed here")
    (tmp_path / "c.yaml").write_text("use_vllm: true\n")
    argv = [
        "lm",
        "train",
        "--trainer",
        "aihf",
        "--model_name_or_path",
        str(tiny_dir / "policy"),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    argv += ["--reward-model", str(tiny_dir / "reward_model"), "--prefs", str(data_dir / "prefs.jsonl")]
    assert aihf.cli.main([*argv, "--config", str(tmp_path / "c.yaml")]) == 2
    assert "vLLM is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("keep", "missing"),
    [
        (("config.json", "model.safetensors"), "tokenizer files"),
        (("tokenizer.json", "tokenizer_config.json", "model.safetensors"), "config.json"),
        (("config.json", "tokenizer.json", "tokenizer_config.json"), "weights"),
    ],
)
def test_incomplete_model_directory_stops_before_any_work(
    keep, missing, tiny_dir, data_dir, tmp_path, capsys
):
    model = tmp_path / "model"
    model.mkdir()
    for name in keep:
        (model / name).write_bytes((tiny_dir / "policy" / name).read_bytes())
    out = tmp_path / "out"
    argv = [
        "lm",
        "train",
        "--trainer",
        "sft",
        "--model_name_or_path",
        str(model),
        "--demos",
        str(data_dir / "demos.jsonl"),
    ]
    assert aihf.cli.main([*argv, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(model) in err[0] and missing in err[0]
    assert not out.exists()


def test_model_given_as_a_file_is_an_input_error(data_dir, tmp_path, capsys):
    argv = ["lm", "train", "--trainer", "sft", "--model_name_or_path", str(data_dir / "demos.jsonl")]
    assert (
        aihf.cli.main([*argv, "--demos", str(data_dir / "demos.jsonl"), "--output_dir", str(tmp_path / "o")])
        == 2
    )
    assert ": is a file" in capsys.readouterr().err


def test_the_lm_command_line_does_not_import_the_benchmark():
    """`aihf lm` stands on its own: train and eval work without `aihf.lm.bench` imported."""
    import subprocess
    import sys

    code = (
        "import sys, aihf.lm.cli, aihf.lm.quickstart; "
        "assert 'aihf.lm.bench' not in sys.modules, sorted(m for m in sys.modules if 'bench' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_is_registered_by_the_lm_package(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "aihf.lm.bench.cli", None)  # as if lm.bench were absent
    with pytest.raises(SystemExit):
        aihf.cli.main(["lm", "--help"])
    commands = capsys.readouterr().out
    assert "eval" in commands and "train" in commands and "generate-data" not in commands


@pytest.mark.parametrize(
    ("trainer", "config", "data", "message"),
    [
        ("direct-aihf", {"alpha": 1.0}, {"prefs"}, "direct-aihf: alpha > 0 needs demonstrations"),
        ("aihf", {"alpha": 0.0}, {"demos"}, "aihf: learning the reward needs demonstrations"),
        ("rlhf", {"sft_steps": 2}, {"prefs"}, "rlhf: sft_steps > 0 needs demonstrations"),
        ("aihf", {"reward_steps_per_iteration": 0}, set(), "aihf: the policy step needs prompts"),
    ],
)
def test_each_methods_data_check_runs_before_anything_loads(trainer, config, data, message, tmp_path):
    from aihf.errors import InputError
    from aihf.lm.train import run_training

    rows = {
        "demos": [{"prompt": "a", "completion": " b"}],
        "prefs": [{"prompt": "a", "chosen": " b", "rejected": " c"}],
    }
    given = {name: rows[name] for name in data}
    with pytest.raises(InputError, match=message):  # "no/such/model" would fail later, when it loads
        run_training(
            trainer, "no/such/model", str(tmp_path), reward_model="no/such/rm", config=config, **given
        )


@pytest.mark.parametrize("trainer", ["aihf", "direct-aihf"])
def test_a_diverging_run_stops_with_one_line_and_saves_no_policy(
    trainer, tiny_dir, data_dir, tmp_path, capsys
):
    fast = FAST_RL if trainer == "aihf" else FAST
    (tmp_path / "c.yaml").write_text(fast.replace("learning_rate: 0.001", "learning_rate: 1.0e+308"))
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", trainer, "--model_name_or_path", str(tiny_dir / "policy")]
    argv += ["--output_dir", str(out), "--reward-model", str(tiny_dir / "reward_model")]
    argv += ["--config", str(tmp_path / "c.yaml")]
    argv += ["--max-iterations", "3", "--max-steps", "3"]
    for name in DATA[trainer]:
        argv += [f"--{name}", str(data_dir / f"{name}.jsonl")]
    assert aihf.cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars: the error line
    assert last.startswith("aihf") and "step " in last and "diverged" in last, last
    assert "no checkpoint was saved" in last
    assert not (out / "policy").exists() and not (out / "reward_model").exists()


def test_the_trainer_comes_from_the_config_when_not_given(tiny_dir, tmp_path, capsys):
    """A YAML that names its trainer needs no --trainer (the README's accelerate command); the config's
    own trainer is then the one whose data demands apply."""
    base = ["lm", "train"]
    base += ["--model_name_or_path", str(tiny_dir / "policy"), "--output_dir", str(tmp_path / "o")]
    (tmp_path / "dpo.yaml").write_text("trainer: dpo\n")
    assert aihf.cli.main([*base, "--config", str(tmp_path / "dpo.yaml")]) == 2
    assert "dpo: needs --prefs" in capsys.readouterr().err
    (tmp_path / "none.yaml").write_text("learning_rate: 0.001\n")
    assert aihf.cli.main([*base, "--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aihf lm train: error: --trainer: not given") and "\n" not in err
    (tmp_path / "bad.yaml").write_text("trainer: dpoo\n")
    assert aihf.cli.main([*base, "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml: field 'trainer' = 'dpoo'" in capsys.readouterr().err


def test_train_help_lists_every_trainers_config_keys(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        aihf.cli.main(["lm", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for method in METHODS.values():
        for field in fields(method.config):
            assert field.name in text, (method.name, field.name)
    assert "use_peft" in text and "self-play-aihf, spin:" in text


def test_every_config_field_is_a_flag_and_defaults_yaml_flags_take_precedence_in_that_order(
    tiny_dir, data_dir, tmp_path, run_config
):
    """TRL's rule: dataclass defaults < --config < flags; the trainer may come from the YAML (two-phase
    parsing), and the flags are checked against that trainer's config class."""
    (tmp_path / "c.yaml").write_text("trainer: dpo\nlearning_rate: 0.001\nbeta: 0.2\nreport_to: none\n")
    base = ["--model_name_or_path", str(tiny_dir / "policy"), "--prefs", str(data_dir / "prefs.jsonl")]
    base += ["--output_dir", str(tmp_path / "o"), "--config", str(tmp_path / "c.yaml")]
    cfg = run_config(
        [*base, "--learning_rate", "2e-3", "--max-prompt-length", "8", "--loss_type", "ipo", "--use_peft"],
    )
    assert cfg.learning_rate == 2e-3  # YAML and flag: the flag
    assert cfg.beta == 0.2  # YAML only
    assert cfg.max_length == 512 and cfg.lora_r == 16  # neither: the dataclass default
    assert (cfg.max_prompt_length, cfg.loss_type, cfg.use_peft) == (8, "ipo", True)  # dashed spelling too
    assert cfg.output_dir == str(tmp_path / "o") and cfg.report_to == "none"
    cfg = run_config([*base, "--disable_dropout", "false", "--report_to", "tensorboard"])
    assert cfg.disable_dropout is False and cfg.report_to == ["tensorboard"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num_generations", "3"], "--num_generations: not a setting of dpo (DirectAIHFConfig)"),
        (["--beta", "0"], "--beta = 0: expected a number > 0"),
        (["--learning_rate", "fast"], "--learning_rate = 'fast': expected a number > 0"),
        (["--loss_type", "hinge"], "--loss_type = 'hinge': expected one of 'sigmoid', 'ipo'"),
        (["--use_peft", "maybe"], "argument --use_peft/--use-peft: 'maybe': expected true or false"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_flag(flags, message, tiny_dir, tmp_path, capsys):
    argv = [
        "lm",
        "train",
        "--trainer",
        "dpo",
        "--model_name_or_path",
        str(tiny_dir / "policy"),
        "--output_dir",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) if "argument" in message else contextlib.nullcontext():
        assert aihf.cli.main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


def test_the_rl_steps_kl_weight_may_be_zero_where_dpos_may_not():
    """The range of a flag is its trainer's: AIHF's RL step takes beta 0 (RANGES' "AIHFConfig.beta")."""
    from aihf.errors import InputError
    from aihf.flags import check_flags
    from aihf.lm.config import RANGES, AIHFConfig, DirectAIHFConfig

    assert check_flags({"beta": 0}, AIHFConfig, RANGES, "aihf") == {"beta": 0.0}
    with pytest.raises(InputError, match="--beta = 0"):
        check_flags({"beta": 0}, DirectAIHFConfig, RANGES, "dpo")


def test_train_help_lists_every_field_as_a_flag_with_its_help_range_and_default(capsys):
    with pytest.raises(SystemExit):
        aihf.cli.main(["lm", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for method in METHODS.values():
        for field in dataclasses.fields(method.config):
            assert f"--{field.name}" in text, (method.name, field.name)
    assert "--learning_rate VALUE, --learning-rate VALUE (> 0; default 1e-05)" in text
    assert "--overlong VALUE (one of truncate, drop, error; default truncate)" in text
    assert "KL weight to the reference policy (> 0; default 0.05 (AIHFConfig), 0.1 (others))" in text
