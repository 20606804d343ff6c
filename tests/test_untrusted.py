"""Untrusted files and runaway values (issue: path escapes, code from data, runaway values).

Unit tests of the shared guards in `aihf.safety`, then a table of hostile or careless inputs run through
`aihf.cli.main`, each expected to give exit 2, exactly one stderr line naming the file or field, and
nothing written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aihf.errors import InputError
from aihf.safety import safe_child

# ------------------------------------------------------------------------------------------------------
# safe_child


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "out-dir").symlink_to(tmp_path)
    (root / "out-file").symlink_to(tmp_path / "secret.txt")
    (root / "in-link").symlink_to(root / "sub" / "a.txt")
    return root


@pytest.mark.parametrize("name", ["sub/a.txt", "sub/../sub/a.txt", "in-link", "new.txt", "sub/new/x"])
def test_safe_child_accepts_names_inside(tree, name):
    assert safe_child(tree, name) == tree / name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../secret.txt", "points outside"),
        ("sub/../../secret.txt", "points outside"),
        ("/etc/passwd", "absolute path"),
        ("out-dir/secret.txt", "points outside"),
        ("out-file", "points outside"),
        (".", "points outside"),
        ("", "expected a relative file name"),
        ("a\x00b", "expected a relative file name"),
    ],
)
def test_safe_child_refuses_names_outside(tree, name, message):
    with pytest.raises(InputError, match=message) as info:
        safe_child(tree, name)
    assert "\n" not in str(info.value)


def test_safe_child_refuses_a_name_that_is_not_text(tree):
    with pytest.raises(InputError, match="expected a relative file name"):
        safe_child(tree, 3)  # type: ignore[arg-type]


def test_safe_child_escapes_control_bytes_in_the_name(tree):
    with pytest.raises(InputError) as info:
        safe_child(tree, "../\x1b[2Jx\ny")
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)
    assert os.sep in str(info.value)


# ------------------------------------------------------------------------------------------------------
# the error line: escaped, and OSError on a user file is one line


def _one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("x\x1b[2J\x1b[31m.json", "x\\x1b[2J\\x1b[31m.json"),
        ("x\ny.json", "x\\ny.json"),
        ("x\ry.json", "x\\ry.json"),
        ("x\x07\x08\x7f.json", "x\\x07\\x08\\x7f.json"),
        ("x\x9b31m.json", "x\\x9b31m.json"),
        ("x\u202egnp.json", "x\\u202egnp.json"),
    ],
    ids=["esc", "newline", "carriage-return", "bell-backspace-del", "c1-csi", "bidi-override"],
)
def test_control_bytes_in_a_file_name_are_escaped_in_the_error_line(name, shown, tmp_path, capfd):
    from aihf.cli import main

    assert main(["choice", "solve", "--json", "--data", str(tmp_path / name)]) == 2
    err = _one_line(capfd)
    assert shown in err
    assert not any(c in err[:-1] for c in "\x1b\r\x07\x08\x7f\x9b\u202e")


def test_argparse_errors_escape_control_bytes(capfd):
    from aihf.cli import main

    with pytest.raises(SystemExit) as info:
        main(["choice", "solve", "--beta", "\x1b[2J\n"])
    assert info.value.code == 2
    err = _one_line(capfd)
    assert "\\x1b[2J\\n" in err


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/data/p.jsonl"),
        IsADirectoryError(21, "Is a directory", "/data/p.jsonl"),
        OSError(28, "No space left on device", "/data/p.jsonl"),
    ],
    ids=["permission", "directory", "disk-full"],
)
def test_an_os_error_on_a_named_file_is_one_line(error, monkeypatch, capfd):
    from aihf import cli

    def handler(args):
        raise error

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["choice", "solve", "--json", "--demo-counts", "5,5"])
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    monkeypatch.setattr(args, "handler", handler)
    assert cli.main([]) == 2
    err = _one_line(capfd)
    assert "/data/p.jsonl" in err and error.strerror.lower() in err.lower()


def test_an_os_error_without_a_file_name_is_a_bug_and_raises(monkeypatch):
    from aihf import cli

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["choice", "solve", "--json", "--demo-counts", "5,5"])
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)

    def handler(args):
        raise OSError("internal")

    monkeypatch.setattr(args, "handler", handler)
    with pytest.raises(OSError, match="internal"):
        cli.main([])


# ------------------------------------------------------------------------------------------------------
# Hub names when the Hub is out of reach: one line at once, no retries


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """No cached models, and a connection attempt to the Hub that fails as without a network."""
    import socket

    from aihf import safety

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    attempts = []

    def refuse(address, timeout=None):
        attempts.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(safety.socket, "create_connection", refuse)
    return attempts


def test_an_uncached_hub_model_is_one_line_when_offline(no_hub, monkeypatch):
    from aihf.safety import check_hub_name

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"--model org/name: not a local directory .* HF_HUB_OFFLINE is set"):
        check_hub_name("org/name", "--model")
    assert no_hub == []  # offline means not even one connection attempt


def test_an_uncached_hub_model_is_one_line_when_the_hub_cannot_be_reached(no_hub):
    from aihf.safety import check_hub_name

    with pytest.raises(InputError, match=r"huggingface\.co cannot be reached \(Name or service not known\)"):
        check_hub_name("org/name", "--reward-model")
    assert no_hub == [("huggingface.co", 443)]


def test_a_cached_hub_model_passes_offline(no_hub, monkeypatch, tmp_path):
    import huggingface_hub.constants

    from aihf.safety import check_hub_name

    cache = tmp_path / "hub-cache"
    repo = cache / "models--org--name"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_hub_name("org/name", "--model")


def test_a_hub_dataset_loads_from_the_cache_only_when_the_hub_cannot_be_reached(no_hub, monkeypatch):
    import datasets

    from aihf.lm.data import load_records

    seen = []

    def load_dataset(name, split):
        seen.append((name, split, datasets.config.HF_HUB_OFFLINE))
        if name == "org/cached":
            return [{"prompt": "a"}]
        raise ConnectionError("not cached")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    before = datasets.config.HF_HUB_OFFLINE
    assert load_records("org/cached:test")[0] == [{"prompt": "a"}]
    with pytest.raises(InputError) as info:
        load_records("org/missing")
    assert str(info.value) == (
        "org/missing: not a local file or directory and not in the datasets cache, and huggingface.co "
        "cannot be reached (Name or service not known)"
    )
    assert seen == [("org/cached", "test", True), ("org/missing", "train", True)]
    assert datasets.config.HF_HUB_OFFLINE is before  # restored
