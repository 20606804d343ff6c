"""Damaged control checkpoints are refused with one line naming the file, leaving the run as it was."""

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from aihf import checkpoints
from aihf.cli import main
from aihf.control.config import AIHFControlConfig
from aihf.control.train import train

TINY = {
    "n_timesteps": 200,
    "steps_per_iter": 100,
    "learning_starts": 100,
    "eval_episodes": 1,
    "batch_size": 32,
    "policy_kwargs": {"net_arch": [32, 32]},
    "reward_updates_per_iter": 3,
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("control_faults") / "run"
    train(AIHFControlConfig(algo="aihf", **TINY), out, tiny_data["demos"], tiny_data["prefs"], progress=False)
    return out


def _resume(out, capsys):
    code = main(["control", "train", "--resume", str(out), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("damage", "name"),
    [
        ("truncate", "sac.zip"),  # policy and critics
        ("truncate", "replay.npz"),
        ("truncate", "state.json"),
        ("truncate", "runtime.npz"),  # reward net and optimiser, RNGs, the environment's state
        ("delete", "runtime.json"),
        ("flip", "replay.npz"),
        ("delete", "manifest.json"),  # a save cut short before its manifest
    ],
)
def test_damaged_checkpoint_is_refused_naming_the_file(damage, name, finished, tmp_path, capsys, damage_file):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    target = out / "checkpoint" / name
    damage_file(target, damage)
    results = (out / "results.json").read_bytes()
    code, err = _resume(out, capsys)
    assert code == 2 and len(err) == 1, err
    assert (name if name != "manifest.json" else "incomplete checkpoint") in err[0]
    assert (out / "results.json").read_bytes() == results


def test_an_intact_checkpoint_still_resumes(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    assert _resume(out, capsys)[0] == 0


def test_a_save_cut_between_its_renames_is_named(finished, tmp_path, capsys):
    """atomic_path moves the old checkpoint aside, then the new one in: a kill between the two leaves
    only the aside copy, which the message points at."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    os.replace(out / "checkpoint", out / ".checkpoint.old")
    code, err = _resume(out, capsys)
    assert code == 2 and len(err) == 1
    assert f"rename {out / '.checkpoint.old'} to {out / 'checkpoint'}" in err[0]
    os.replace(out / ".checkpoint.old", out / "checkpoint")
    assert _resume(out, capsys)[0] == 0


def test_our_checkpoint_state_holds_no_pickle(finished):
    """Only sac.zip, stable-baselines3's format, may hold pickled parts (the documented trust boundary)."""
    names = sorted(p.name for p in (finished / "checkpoint").iterdir())
    assert names == ["manifest.json", "replay.npz", "runtime.json", "runtime.npz", "sac.zip", "state.json"]
    for name in ("replay.npz", "runtime.npz"):
        with np.load(finished / "checkpoint" / name, allow_pickle=False) as npz:
            assert all(npz[key].dtype != object for key in npz.files)


class _RunsCode:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"aihf-unpickled-{os.getpid()}"


@pytest.mark.parametrize("crafted", ["runtime.pkl", "runtime.npz"])
def test_a_pickle_in_the_checkpoint_is_refused_unread(crafted, finished, tmp_path, capsys):
    """A re-sealed checkpoint carrying a pickle (an old-format runtime.pkl, or an object array in our
    npz) stops the resume with one line; the pickle's code does not run."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    ckpt = out / "checkpoint"
    if crafted == "runtime.pkl":
        (ckpt / "runtime.pkl").write_bytes(pickle.dumps(_RunsCode()))
    else:
        np.savez(ckpt / "runtime.npz", **{"0": np.array([_RunsCode()], dtype=object)})
    checkpoints.write_manifest(ckpt)
    MARKER.unlink(missing_ok=True)
    code, err = _resume(out, capsys)
    assert code == 2 and len(err) == 1, err
    assert crafted in err[0]
    assert not MARKER.exists()
