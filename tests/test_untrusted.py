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
