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
