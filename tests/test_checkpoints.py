"""Manifests, verification, rename-then-delete pruning and torn JSON-lines logs."""

import pytest

from aihf.checkpoints import (
    CheckpointError,
    is_complete,
    prune,
    read_log,
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


def test_read_log_drops_only_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    assert read_log(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(InputError, match=r"metrics\.jsonl, line 2: not valid JSON"):
        read_log(log)


def _manifest(root, files):
    import json

    (root / "manifest.json").write_text(json.dumps({"files": files}))


@pytest.mark.parametrize(
    "name",
    ["../outside.txt", "sub/../../outside.txt", "/etc/passwd", "link/secret", "linkfile", ""],
    ids=["dotdot", "nested-dotdot", "absolute", "symlinked-dir", "symlinked-file", "empty"],
)
def test_manifest_names_outside_the_checkpoint_are_refused(tmp_path, checkpoint, name):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (checkpoint / "link").symlink_to(tmp_path)
    (checkpoint / "linkfile").symlink_to(outside)
    _manifest(checkpoint, {name: {"size": 6, "sha256": "0" * 64}})
    with pytest.raises(CheckpointError) as info:
        verify(checkpoint)
    message = str(info.value)
    assert "\n" not in message and "manifest" in message
    assert "refusing" in message or "expected a relative" in message or "absolute" in message


@pytest.mark.parametrize(
    "manifest",
    ["[]", '{"files": []}', '{"files": {"a": 3}}', '{"files": {"a": {"size": "x", "sha256": "0"}}}', "null"],
    ids=["list", "files-list", "entry-number", "size-text", "null"],
)
def test_manifests_of_the_wrong_shape_are_damaged(checkpoint, manifest):
    (checkpoint / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match="damaged checkpoint manifest"):
        verify(checkpoint)


def test_a_manifest_that_is_not_text_is_damaged(checkpoint):
    (checkpoint / "manifest.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CheckpointError, match="damaged checkpoint manifest"):
        verify(checkpoint)
