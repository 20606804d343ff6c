import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import aihf.cli

FAST = "batch_size: 3\nlearning_rate: 0.001\ntensorboard: false\n"
FAST_RL = FAST + "prompt_batch_size: 2\nnum_samples: 2\nmax_new_tokens: 5\n"
FAST_SELF_PLAY = FAST + "steps_per_iteration: 1\nmax_new_tokens: 5\n"
TRAINERS = {  # trainer: (data it takes, outputs it writes)
    "aihf": (("demos", "prefs", "prompts"), ("policy", "reward_model")),
    "rlhf": (("prefs", "prompts"), ("policy", "reward_model")),
    "direct-aihf": (("demos", "prefs"), ("policy",)),
    "self-play-aihf": (("demos", "prefs"), ("policy",)),
    "spin": (("demos",), ("policy",)),
    "sft": (("demos",), ("policy",)),
    "reward": (("prefs",), ("reward_model",)),
    "dpo": (("prefs",), ("policy",)),
    "ipo": (("prefs",), ("policy",)),
}


@pytest.fixture(autouse=True)
def lm_cli_only(monkeypatch):
    """The CLI with only the lm domain, whatever other domains this checkout has."""
    monkeypatch.setattr(aihf.cli, "DOMAINS", ("aihf.lm.cli",))


def _changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_trainer_runs_changes_weights_and_logs(trainer, tiny_dir, data_dir, tmp_path, capsys):
    data, outputs = TRAINERS[trainer]
    yaml = {"aihf": FAST_RL, "rlhf": FAST_RL, "self-play-aihf": FAST_SELF_PLAY, "spin": FAST_SELF_PLAY}
    (tmp_path / "fast.yaml").write_text(yaml.get(trainer, FAST))
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", trainer, "--model", str(tiny_dir / "policy"), "--out", str(out)]
    argv += ["--reward-model", str(tiny_dir / "reward_model"), "--config", str(tmp_path / "fast.yaml")]
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
        if name in outputs:
            before = loaders[name].from_pretrained(tiny_dir / name).state_dict()
            assert _changed(before, loaders[name].from_pretrained(out / name).state_dict()), name
        else:
            assert not (out / name).exists()


def test_bad_data_stops_before_training_with_one_line(tiny_dir, data_dir, tmp_path, capsys, jsonl):
    bad = jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
    )
    out = tmp_path / "out"
    argv = ["lm", "train", "--trainer", "dpo", "--model", str(tiny_dir / "policy"), "--prefs", str(bad)]
    assert aihf.cli.main([*argv, "--out", str(out)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()  # the error line and nothing else
    assert err.startswith("aihf: error: ") and "prefs.jsonl, line 2, field 'rejected': missing value" in err
    assert not out.exists()


def test_unknown_config_key_and_missing_data_are_input_errors(tiny_dir, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("learning_rat: 0.1\n")
    base = ["lm", "train", "--model", str(tiny_dir / "policy"), "--out", str(tmp_path / "o")]
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
        "--model",
        str(tiny_dir / "policy"),
        "--out",
        str(tmp_path / "o"),
    ]
    argv += ["--reward-model", str(tiny_dir / "reward_model"), "--prefs", str(data_dir / "prefs.jsonl")]
    assert aihf.cli.main([*argv, "--config", str(tmp_path / "c.yaml")]) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
