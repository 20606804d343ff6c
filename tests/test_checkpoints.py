"""Manifests, verification, rename-then-delete pruning and torn JSON-lines logs."""

import pytest

from aihf.checkpoints import (
    CheckpointError,
    is_complete,
    prune,
    read_jsonl,
    remove_leftovers,
    verify,
    write_manifest,
)
from aihf.errors import InputError


@pytest.fixture
def checkpoint(tmp_path):
    root = tmp_path / "checkpoint-1"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"\x01" * 1000)
    (root / "sub" / "rng.pkl").write_bytes(b"state")
    write_manifest(root)
    return root


def test_a_sealed_checkpoint_verifies(checkpoint):
    verify(checkpoint)
    assert is_complete(checkpoint)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "weights.bin").write_bytes(b"\x01" * 10),
            "weights.bin: 10 bytes, the checkpoint saved 1000",
        ),
        (lambda r: (r / "weights.bin").write_bytes(b"\x02" * 1000), "weights.bin: contents differ"),
        (lambda r: (r / "sub" / "rng.pkl").unlink(), "rng.pkl: missing from the checkpoint"),
        (lambda r: (r / "manifest.json").unlink(), "incomplete checkpoint"),
        (lambda r: (r / "manifest.json").write_text("{"), "damaged checkpoint manifest"),
    ],
)
def test_damage_is_named(checkpoint, damage, message):
    damage(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        verify(checkpoint)
    assert not is_complete(checkpoint)


def test_prune_renames_first_and_leftovers_are_cleared(tmp_path, checkpoint):
    leftover = tmp_path / ".checkpoint-0.deleting"
    leftover.mkdir()
    prune([checkpoint])
    assert not checkpoint.exists()
    remove_leftovers(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(InputError, match=r"metrics\.jsonl, line 2: not valid JSON"):
        read_jsonl(log)
