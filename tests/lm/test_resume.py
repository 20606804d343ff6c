"""An interrupted run resumed from its checkpoint ends where an uninterrupted run ends."""

import json

import pytest

from aihf.lm.train import run_training


def _run(trainer, tiny_dir, data_dir, out, limit, **extra):
    data = {"demos": str(data_dir / "demos.jsonl"), "prefs": str(data_dir / "prefs.jsonl")}
    config = {
        "per_device_train_batch_size": 3,
        "learning_rate": 1e-3,
        "report_to": "none",
        "save_steps": 2,
    } | extra
    if trainer in ("self-play-aihf",):
        config |= {"steps_per_iteration": 1, "max_completion_length": 5}
    return run_training(
        trainer,
        str(tiny_dir / "policy"),
        str(out),
        max_iterations=limit,
        max_steps=limit,
        config=config,
        **data,
    )


@pytest.mark.parametrize("trainer", ["direct-aihf", "self-play-aihf"])
def test_resumed_run_matches_the_uninterrupted_one(trainer, tiny_dir, data_dir, tmp_path):
    _run(trainer, tiny_dir, data_dir, tmp_path / "straight", 4)
    _run(trainer, tiny_dir, data_dir, tmp_path / "cut", 3)  # cut after step 3; checkpoint-2 survives
    _run(trainer, tiny_dir, data_dir, tmp_path / "cut", 4, resume_from_checkpoint=True)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]
    straight = (tmp_path / "straight" / "policy" / "model.safetensors").read_bytes()
    assert (tmp_path / "cut" / "policy" / "model.safetensors").read_bytes() == straight


def test_trl_baseline_resumes_from_its_checkpoint(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "dpo"
    run_training(
        "dpo",
        str(tiny_dir / "policy"),
        str(out),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=2,
        config={"per_device_train_batch_size": 3, "save_steps": 2, "report_to": "none", "logging_steps": 1},
    )
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    final = run_training(
        "dpo",
        str(tiny_dir / "policy"),
        str(out),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=4,
        config={
            "per_device_train_batch_size": 3,
            "save_steps": 2,
            "report_to": "none",
            "logging_steps": 1,
            "resume_from_checkpoint": True,
        },
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]  # per-step records, not TRL's end-of-run summary
    assert steps == [1, 2, 3, 4] and final["step"] == 4


def test_resume_refuses_other_settings_and_another_method(tiny_dir, data_dir, tmp_path):
    from aihf.errors import InputError

    _run("direct-aihf", tiny_dir, data_dir, tmp_path / "cut", 2)
    with pytest.raises(
        InputError, match=r"checkpoint-2: resuming with settings .*learning_rate: 0.001 -> 0.01"
    ):
        _run(
            "direct-aihf",
            tiny_dir,
            data_dir,
            tmp_path / "cut",
            4,
            resume_from_checkpoint=True,
            learning_rate=1e-2,
        )
    with pytest.raises(InputError, match=r"a checkpoint of 'direct-aihf', not of 'self-play-aihf'"):
        _run("self-play-aihf", tiny_dir, data_dir, tmp_path / "cut", 4, resume_from_checkpoint=True)
    _run("direct-aihf", tiny_dir, data_dir, tmp_path / "cut", 3, resume_from_checkpoint=True, logging_steps=2)
    assert (tmp_path / "cut" / "policy" / "model.safetensors").is_file()
