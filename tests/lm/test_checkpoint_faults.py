"""Damaged LM checkpoints are refused with one line naming the file; torn logs and cut prunes are survived."""

import json
import os
import shutil

import pytest

import aihf.cli
from aihf import checkpoints
from aihf.lm.train import run_training

CONFIG = {"per_device_train_batch_size": 3, "learning_rate": 1e-3, "report_to": "none", "save_steps": 2}


def _run(tiny_dir, data_dir, out, steps, trainer="direct-aihf", **extra):
    data = {"prefs": str(data_dir / "prefs.jsonl")}
    if trainer == "direct-aihf":
        data["demos"] = str(data_dir / "demos.jsonl")
    config = CONFIG | extra
    return run_training(trainer, str(tiny_dir / "policy"), str(out), max_steps=steps, config=config, **data)


@pytest.fixture(scope="module")
def finished(tiny_dir, data_dir, tmp_path_factory):
    """A direct-aihf run of 4 steps with checkpoint-2 and checkpoint-4."""
    out = tmp_path_factory.mktemp("lm_faults") / "run"
    _run(tiny_dir, data_dir, out, 4)
    return out


def _resume_cli(tiny_dir, data_dir, out, capsys, resume="true", more_yaml=""):
    # CONFIG: a resume keeps the settings
    same = "per_device_train_batch_size: 3\nlearning_rate: 0.001\nreport_to: none\n"
    (out.parent / "resume.yaml").write_text(
        f"{same}save_steps: 2\nresume_from_checkpoint: {resume}\n{more_yaml}"
    )
    argv = ["lm", "train", "--trainer", "direct-aihf", "--model_name_or_path", str(tiny_dir / "policy")]
    argv += ["--prefs", str(data_dir / "prefs.jsonl"), "--demos", str(data_dir / "demos.jsonl")]
    argv += ["--max-steps", "6", "--config", str(out.parent / "resume.yaml"), "--output_dir", str(out)]
    code = aihf.cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("truncate", "trainable_weights_0.pt"),  # the weights
        ("truncate", "optimizer.bin"),
        ("truncate", "aihf_state.npz"),  # the trainer's counters, samplers and schedule
        ("delete", "random_states_0.pkl"),  # the RNG state: resuming without it would differ silently
        ("flip", "aihf_state.json"),
        ("delete", "manifest.json"),  # a save cut short before its manifest
    ],
)
def test_damaged_checkpoint_is_refused_naming_the_file(
    damage, named, finished, tiny_dir, data_dir, tmp_path, capsys, damage_file
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    target = out / "checkpoints" / "checkpoint-4" / named
    damage_file(target, damage)
    policy = (out / "policy" / "model.safetensors").read_bytes()
    code, err = _resume_cli(tiny_dir, data_dir, out, capsys)
    assert code == 2 and len(err) == 1, err
    place = "checkpoint-4" if named == "manifest.json" else named
    assert place in err[0] and "not resuming" in err[0]
    assert f"the newest complete one is {out / 'checkpoints' / 'checkpoint-2'}" in err[0]
    assert (out / "policy" / "model.safetensors").read_bytes() == policy  # nothing was trained or written


@pytest.mark.parametrize(
    ("named", "content"),
    [
        ("random_states_0.pkl", b"not a pickle"),  # accelerate alone would only log it and go on
        ("random_states_0.pkl", b""),
        ("optimizer.bin", b"\x80\x02garbage"),
        ("optimizer.bin", b""),
        ("trainable_weights_0.pt", b"\x00" * 16),
        ("aihf_state.npz", b"PK\x05\x06" + b"\x00" * 18),
        ("aihf_state.json", b'{"__dict__": {}}'),
        ("aihf_state.json", b"[1, 2, 3]"),
    ],
)
def test_a_resealed_unloadable_part_stops_the_resume_naming_it(
    named, content, finished, tiny_dir, data_dir, tmp_path, capsys
):
    """Damage that the manifest does not catch (it was written again after the damage) still stops the
    resume: never a silently inexact one."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last = out / "checkpoints" / "checkpoint-4"
    (last / named).write_bytes(content)
    checkpoints.write_manifest(last)
    code, err = _resume_cli(tiny_dir, data_dir, out, capsys)
    # known once the models are built, some only after they load: still one line (no loading bars)
    assert code == 2 and len(err) == 1, err
    assert str(last / named) in err[0] or str(last) in err[0], err
    assert named.split(".")[0] in err[0] or "cannot be resumed" in err[0], err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # nothing trained


class _RunsCode:
    def __reduce__(self):
        return (open, ("pwned", "w"))


def test_a_pickled_trainer_state_is_refused_not_unpickled(finished, tiny_dir, data_dir, tmp_path, capsys):
    """accelerate loads its custom-object pickles with weights_only=False; aihf writes none and refuses
    one found in a checkpoint, so a crafted checkpoint runs no code."""
    import pickle

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last = out / "checkpoints" / "checkpoint-4"
    (last / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_RunsCode()))
    checkpoints.write_manifest(last)
    code, err = _resume_cli(tiny_dir, data_dir, out, capsys)
    assert code == 2 and len(err) == 1, err
    assert "custom_checkpoint_0.pkl: pickled trainer state" in err[0]
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")
    # aihf's own checkpoints hold no pickle that accelerate would load with weights_only=False
    assert {p.name for p in (finished / "checkpoints" / "checkpoint-4").glob("*.pkl")} == {
        "random_states_0.pkl"
    }


def test_a_checkpoint_of_other_weights_is_refused_naming_the_file(
    finished, tiny_dir, data_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    # full-model weights, resumed into a LoRA-wrapped policy: the checkpoint's run.json names the change
    code, err = _resume_cli(tiny_dir, data_dir, out, capsys, more_yaml="use_peft: true\n")
    assert code == 2 and len(err) == 1 and "use_peft: False -> True" in err[0], err
    # a checkpoint without run.json (as older versions wrote): the weights' own fit check still refuses
    last = out / "checkpoints" / "checkpoint-4"
    (last / "run.json").unlink()
    checkpoints.write_manifest(last)
    code, err = _resume_cli(tiny_dir, data_dir, out, capsys, more_yaml="use_peft: true\n")
    # the fit is known once the model is built (one line: no loading bar before it), before any training
    assert code == 2 and len(err) == 1 and "trainable_weights_0.pt: does not fit model 0" in err[0], err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_the_complete_checkpoint_named_in_the_message_resumes(finished, tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "checkpoints" / "checkpoint-4" / "random_states_0.pkl").unlink()
    assert _resume_cli(tiny_dir, data_dir, out, capsys)[0] == 2
    code, _ = _resume_cli(tiny_dir, data_dir, out, capsys, resume=str(out / "checkpoints" / "checkpoint-2"))
    assert code == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_torn_last_metrics_line_is_dropped_on_resume(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    _run(tiny_dir, data_dir, out, 3)  # checkpoint-2, then step 3 logged
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 0.6')  # killed mid-write
    _run(tiny_dir, data_dir, out, 4, resume_from_checkpoint=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]


def test_interrupted_prune_leaves_no_half_deleted_checkpoint(
    finished, tiny_dir, data_dir, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    old = out / "checkpoints" / "checkpoint-2"
    real_rmtree = shutil.rmtree

    def cut_short(path, *args, **kwargs):  # Ctrl-C after the first file is gone
        if not path.exists():
            return real_rmtree(path, *args, **kwargs)
        next(p for p in sorted(path.rglob("*")) if p.is_file()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", cut_short)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.remove_dir(old)
    monkeypatch.setattr(checkpoints.shutil, "rmtree", real_rmtree)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".checkpoint-2.deleting", "checkpoint-4"]  # the half-deleted copy is hidden
    _run(tiny_dir, data_dir, out, 6, resume_from_checkpoint=True)  # resumes from 4, saves 6, prunes
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-4", "checkpoint-6"]  # the leftover was cleared by the next save


def test_trl_checkpoint_with_deleted_rng_state_is_refused(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    _run(tiny_dir, data_dir, out, 2, trainer="dpo", logging_steps=1)
    checkpoint = out / "checkpoints" / "checkpoint-2"
    checkpoints.verify(checkpoint)  # sealed by the manifest callback
    (checkpoint / "rng_state.pth").unlink()
    capsys.readouterr()  # the first run's progress bars
    (tmp_path / "resume.yaml").write_text("save_steps: 2\nresume_from_checkpoint: true\n")
    argv = ["lm", "train", "--trainer", "dpo"]
    argv += ["--model_name_or_path", str(tiny_dir / "policy"), "--max-steps", "4"]
    argv += ["--prefs", str(data_dir / "prefs.jsonl"), "--config", str(tmp_path / "resume.yaml")]
    assert aihf.cli.main([*argv, "--output_dir", str(out)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "rng_state.pth: missing from the checkpoint" in err
