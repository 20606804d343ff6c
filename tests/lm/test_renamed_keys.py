"""Keys renamed to TRL's names (lm) are still read under their old names: from YAML, flags and the
committed records. The old names here are on purpose: the rename script (see the README's migration
table) leaves this file alone."""

import json
from pathlib import Path

import aihf.cli
import aihf.flags
from aihf.lm.bench.bench import BenchConfig, _store
from aihf.lm.config import load_yaml
from aihf.lm.methods import build_config

ROOT = Path(__file__).resolve().parents[2]


def test_old_names_are_read_with_one_deprecation_line_each_and_both_names_is_an_error(
    tiny_dir, data_dir, tmp_path, monkeypatch, run_config, capsys
):
    """TRL's names replaced ours (batch_size, num_samples, max_new_tokens, cpu, model, --out): the old
    ones still work, from the YAML and as flags, each with one line naming the new name."""
    monkeypatch.setattr(aihf.flags, "_warned", set())
    (tmp_path / "old.yaml").write_text(
        f"trainer: aihf\nmodel: {tiny_dir / 'policy'}\nbatch_size: 3\nnum_samples: 3\nreport_to: none\n"
    )
    argv = ["--config", str(tmp_path / "old.yaml"), "--reward-model", str(tiny_dir / "reward_model")]
    argv += ["--prompts", str(data_dir / "prompts.jsonl"), "--reward_steps_per_iteration", "0"]
    cfg = run_config([*argv, "--out", str(tmp_path / "o"), "--max_new_tokens", "7", "--cpu"])
    assert (cfg.per_device_train_batch_size, cfg.num_generations) == (3, 3)  # YAML's old keys
    assert (cfg.max_completion_length, cfg.use_cpu, cfg.output_dir) == (7, True, str(tmp_path / "o"))  # flags
    warned = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
    yaml = f"aihf: warning: {tmp_path / 'old.yaml'}:"
    assert sorted(warned) == sorted(
        [
            f"{yaml} model is deprecated, use model_name_or_path",
            f"{yaml} batch_size is deprecated, use per_device_train_batch_size",
            f"{yaml} num_samples is deprecated, use num_generations",
            "aihf: warning: arguments: --out is deprecated, use --output_dir",
            "aihf: warning: arguments: --max_new_tokens is deprecated, use --max_completion_length",
            "aihf: warning: arguments: --cpu is deprecated, use --use_cpu",
        ]
    )
    both = ["--max_new_tokens", "7", "--max_completion_length", "8", "--output_dir", str(tmp_path / "o")]
    assert aihf.cli.main(["lm", "train", *argv, *both]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "aihf lm train: error: arguments: --max_new_tokens and --max_completion_length are one setting "
        "(--max_new_tokens is its old name); give --max_completion_length only"
    )
    (tmp_path / "both.yaml").write_text("trainer: dpo\nbatch_size: 3\nper_device_train_batch_size: 4\n")
    assert aihf.cli.main(["lm", "train", "--config", str(tmp_path / "both.yaml"), "--output_dir", "o"]) == 2
    assert "both.yaml: batch_size and per_device_train_batch_size are one setting" in capsys.readouterr().err


def test_a_config_in_the_old_key_names_builds_the_same_config(tmp_path, capsys):
    """Configs written before TRL's names (batch_size, num_samples, max_new_tokens, cpu, model) still load."""
    path = ROOT / "configs" / "lm" / "imdb_gpt2_aihf.yaml"
    text = path.read_text()
    old = text.replace("per_device_train_batch_size:", "batch_size:").replace(
        "num_generations:", "num_samples:"
    )
    old = old.replace("max_completion_length:", "max_new_tokens:").replace("model_name_or_path:", "model:")
    assert old != text
    (tmp_path / "old.yaml").write_text(old)
    values, old_values = load_yaml(path), load_yaml(tmp_path / "old.yaml")
    new = build_config(values["trainer"], values, str(path))
    assert build_config(values["trainer"], old_values, str(tmp_path / "old.yaml")) == new
    assert "num_samples is deprecated, use num_generations" in capsys.readouterr().err


def test_every_job_of_the_smollm2_protocol_finds_its_committed_record_written_under_the_old_key_names():
    """The v1 records (docs/results/lm/smollm2/records) hold configs with the names from before TRL's
    (batch_size, num_samples, max_new_tokens, cpu): read in the current names, each still matches its
    job, so the committed report is rebuilt from them and nothing reruns."""
    records = Path(__file__).resolve().parents[2] / "docs" / "results" / "lm" / "smollm2" / "records"
    cfg = BenchConfig.preset("smollm2", model_dir="/elsewhere/models/smollm2-135m-instruct")
    cfg.records = str(records)
    jobs = cfg.jobs()
    old = json.loads((records / f"{jobs[0].name}.json").read_text())["config"]
    assert {"batch_size", "num_samples", "max_new_tokens", "cpu"} <= set(old)  # the committed form
    assert "per_device_train_batch_size" in jobs[0].spec["config"]
    store = _store(Path("/nonexistent-out"), cfg)
    # aihf-warm's v1 record ran 1 reward step per iteration, the confound v2 removed: it alone reruns
    found = [(job.method, store.finished(job) is not None) for job in jobs]
    assert len(jobs) == 47 and all(done == (method != "aihf-warm") for method, done in found)
