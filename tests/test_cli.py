import pytest

from aihf import __version__
from aihf.cli import build_parser, main
from aihf.io import atomic_path, write_json


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    help_text = build_parser().format_help()
    for command in ("choice", "control", "lm", "quickstart"):
        assert command in help_text


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith('{\n  "ok": 1')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_path_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("first")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


def test_every_subcommand_has_a_description_and_an_aihf_prefix():
    subs = list(_subparsers(build_parser()))
    assert len(subs) > 10
    for sub in subs:
        assert sub.prog.startswith("aihf "), sub.prog
        assert sub.description, sub.prog


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (
            ["lm", "train", "--output_dir", "x", "--no-such-flag", "1"],
            "aihf lm train: error: unrecognized arguments: ",
        ),
        (["control", "train", "--bogus"], "aihf control train: error: unrecognized arguments: --bogus"),
        (["lm", "bench", "--preset", "nope", "--out", "x"], "aihf lm bench: error: argument --preset"),
        (["lm", "no-such"], "aihf lm: error: argument lm_command: invalid choice"),
        (["--bogus"], "aihf: error: "),
    ],
)
def test_usage_errors_are_one_line_prefixed_by_the_subcommand_path(argv, prefix, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(prefix) and err.count("\n") == 1, err


def test_input_errors_carry_the_subcommand_path(tmp_path, capsys):
    assert main(["choice", "example1", "--out", str(tmp_path / "o"), "--beta", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aihf choice example1: error: --beta must be") and err.count("\n") == 1, err
    assert (
        main(["control", "train", "--config", str(tmp_path / "no.yaml"), "--out", str(tmp_path / "c")]) == 2
    )
    assert capsys.readouterr().err.startswith("aihf control train: error: ")
