"""Untrusted files and runaway values (issue: path escapes, code from data, runaway values).

Unit tests of the shared guards in `aihf.safety`, then a table of hostile or careless inputs run through
`aihf.cli.main`, each expected to give exit 2, exactly one stderr line naming the file or field, and
nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


# ------------------------------------------------------------------------------------------------------
# one run per --out


def _lock_file(out: Path) -> Path:
    return out.with_name(f".{out.name}.aihf.lock")


def _holder(out: Path, body: str) -> subprocess.Popen[str]:
    """A separate process that takes the lock on `out` (`body` uses OUT), says "held", waits for input."""
    code = f"from aihf.safety import RunLock\nOUT = {str(out)!r}\n{body}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def test_the_lock_holds_the_pid_beside_out_and_is_removed_on_release(tmp_path):
    from aihf.safety import RunLock

    out = tmp_path / "a" / "b" / "out"
    with RunLock(out):
        assert _lock_file(out).read_text() == f"{os.getpid()}\n"
        assert not out.exists()  # nothing written into --out
    assert list(tmp_path.iterdir()) == []  # the parents it made are gone again


def test_a_second_lock_on_the_same_out_names_the_holder(tmp_path):
    from aihf.safety import LockedError, RunLock

    out = tmp_path / "out"
    with RunLock(out), pytest.raises(LockedError) as info:
        RunLock(tmp_path / "." / "out").acquire()  # another spelling of the same path
    assert f"in use by another run (pid {os.getpid()}" in str(info.value)
    RunLock(out).acquire()  # released: free again


def test_a_live_process_holding_the_lock_refuses_others_until_it_exits(tmp_path):
    from aihf.safety import LockedError, RunLock

    out = tmp_path / "out"
    holder = _holder(out, "with RunLock(OUT):\n    print('held', flush=True)\n    input()")
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockedError, match=f"pid {holder.pid},"):
            RunLock(out).acquire()
    finally:
        holder.communicate("\n")
    with RunLock(out):
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    import signal

    from aihf.safety import RunLock

    out = tmp_path / "out"
    holder = _holder(out, "RunLock(OUT).acquire()\nprint('held', flush=True)\ninput()")
    assert holder.stdout.readline() == "held\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert _lock_file(out).read_text() == f"{holder.pid}\n"  # left behind, naming a dead pid
    with RunLock(out):
        assert _lock_file(out).read_text() == f"{os.getpid()}\n"


def test_a_refused_lock_leaves_no_directories_behind(tmp_path):
    from aihf.safety import LockedError, RunLock

    with RunLock(tmp_path / "x" / "out"):
        with pytest.raises(LockedError):
            RunLock(tmp_path / "x" / "out").acquire()
        assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [".out.aihf.lock"]


# ------------------------------------------------------------------------------------------------------
# --out over an input or a finished run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "done" / "policy").mkdir(parents=True)
    (tmp_path / "done" / "policy" / "config.json").write_text("{}")
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "results.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize(
    ("out", "inputs", "message"),
    [
        ("model", {"--model": "model"}, "--out {t}/model: is the input --model {t}/model"),
        (".", {"--model": "model"}, "holds the input --model {t}/model, which the run would overwrite"),
        (".", {"--base-model": "model"}, "holds the input --base-model"),
        ("done", {}, "holds a finished run (policy/config.json); pass --overwrite"),
        ("control", {}, "holds a finished run (results.json)"),
        ("model/..", {"--model": "model"}, "holds the input --model"),
    ],
)
def test_an_out_over_an_input_or_a_finished_run_is_refused(run_dir, out, inputs, message):
    from aihf.safety import refuse_out_over_input

    with pytest.raises(InputError) as info:
        refuse_out_over_input(run_dir / out, {flag: run_dir / path for flag, path in inputs.items()})
    assert message.format(t=run_dir) in str(info.value)


def test_an_out_that_is_a_data_file_is_refused_but_one_holding_it_is_not(run_dir):
    from aihf.safety import refuse_out_over_input

    with pytest.raises(InputError, match=r"data\.jsonl: is the input --prefs"):
        refuse_out_over_input(run_dir / "data.jsonl", {}, {"--prefs": run_dir / "data.jsonl"})
    refuse_out_over_input(run_dir, {}, {"--prefs": run_dir / "data.jsonl"})


def test_overwrite_allows_a_finished_run_but_never_an_input(run_dir):
    from aihf.safety import refuse_out_over_input

    refuse_out_over_input(run_dir / "done", {}, overwrite=True)
    with pytest.raises(InputError, match="is the input"):
        refuse_out_over_input(run_dir / "model", {"--model": run_dir / "model"}, overwrite=True)


def test_outs_beside_inputs_and_hub_names_pass(run_dir):
    from aihf.safety import refuse_out_over_input

    refuse_out_over_input(
        run_dir / "new", {"--model": run_dir / "model", "--prefs": "org/set", "--demos": None}
    )
    refuse_out_over_input(run_dir / "model" / "run", {"--model": run_dir / "model"})  # inside an input


def test_a_symlink_to_an_input_is_the_input(run_dir):
    from aihf.safety import refuse_out_over_input

    (run_dir / "alias").symlink_to(run_dir / "model")
    with pytest.raises(InputError, match="is the input --model"):
        refuse_out_over_input(run_dir / "alias", {"--model": run_dir / "model"})


# ------------------------------------------------------------------------------------------------------
# non-finite values


@pytest.mark.parametrize(
    ("loss", "grad_norm", "message"),
    [
        (float("nan"), 1.0, "step 7: loss is nan"),
        (float("inf"), None, "step 7: loss is inf"),
        (1.0, float("inf"), "step 7: gradient norm is inf"),
        ("tensor-nan", 0.5, "step 7: loss is nan"),
        (0.1, "tensor-inf", "step 7: gradient norm is inf"),
    ],
)
def test_check_finite_stops_at_the_first_non_finite_value(loss, grad_norm, message):
    import torch

    from aihf.safety import NonFiniteError, check_finite

    tensors = {"tensor-nan": torch.tensor(float("nan")), "tensor-inf": torch.tensor([float("inf")])}
    loss, grad_norm = tensors.get(loss, loss), tensors.get(grad_norm, grad_norm)
    with pytest.raises(NonFiniteError) as info:
        check_finite(7, loss, grad_norm, "runs/x/checkpoints/checkpoint-5")
    assert message in str(info.value)
    assert "the last good checkpoint is runs/x/checkpoints/checkpoint-5" in str(info.value)
    with pytest.raises(NonFiniteError, match="no checkpoint was saved"):
        check_finite(7, loss, grad_norm, None)


def test_check_finite_passes_finite_values():
    import torch

    from aihf.safety import check_finite

    check_finite(1, 0.5, 2.0, None)
    check_finite(1, torch.tensor(1e30), None, None)
    check_finite(1, 0, torch.tensor([3.0]), "c")


def test_non_finite_weights_are_not_saved():
    import torch

    from aihf.safety import NonFiniteError, check_finite_weights

    model = torch.nn.Linear(3, 2)
    check_finite_weights(model, "policy")
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
        model.bias[1] = float("-inf")
    with pytest.raises(NonFiniteError, match="policy: 1 non-finite values in weight; not saved"):
        check_finite_weights(model, "policy")
    check_finite_weights({"steps": torch.tensor([3]), "w": torch.zeros(2)}, "state")  # ints are skipped


# ------------------------------------------------------------------------------------------------------
# weights files: no code from data


class _Payload:
    """Unpickling it would call os.system; weights-only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused_not_run(tmp_path, monkeypatch):
    import torch

    from aihf.safety import load_weights

    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(2), "x": _Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model\.bin: refused: a pickle that is not plain tensors"):
        load_weights(tmp_path / "pytorch_model.bin")
    assert not (tmp_path / "pwned").exists()


def test_plain_tensor_pickles_and_safetensors_load(tmp_path):
    import torch
    from safetensors.torch import save_file

    from aihf.safety import load_weights

    weights = {"w": torch.arange(4.0)}
    torch.save(weights, tmp_path / "w.bin")
    save_file(weights, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_weights(tmp_path / "w.bin")["w"], weights["w"])
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["w"], weights["w"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("w.safetensors", b"\x00" * 4, "not a readable safetensors file"),
        ("w.safetensors", b"\xff" * 8 + b"{}", "not a readable safetensors file"),
        ("w.bin", b"not a pickle", "refused: a pickle that is not plain tensors, or damaged"),
        ("w.pkl", b"x", "unsupported weights file '.pkl'"),
        ("w.bin", None, "weights file not found"),
    ],
)
def test_bad_weights_files_are_one_line(tmp_path, name, content, message):
    from aihf.safety import load_weights

    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_weights(tmp_path / name)
    assert "\n" not in str(info.value)


def test_a_pickle_of_something_other_than_a_mapping_is_refused(tmp_path):
    import torch

    from aihf.safety import load_weights

    torch.save([torch.zeros(1)], tmp_path / "w.pt")
    with pytest.raises(InputError, match="expected a mapping of names to tensors"):
        load_weights(tmp_path / "w.pt")


# ------------------------------------------------------------------------------------------------------
# the CLI takes the lock and refuses an --out over an input for every command


def test_a_second_command_on_a_locked_out_is_one_line_naming_the_holder(tmp_path, capfd):
    from aihf.cli import main
    from aihf.safety import RunLock

    out = tmp_path / "run"
    with RunLock(out):
        assert main(["choice", "example1", "--out", str(out)]) == 2
    err = _one_line(capfd)
    assert f"--out {out}: in use by another run (pid {os.getpid()}" in err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_releases_the_lock_after_a_run(tmp_path, capfd):
    from aihf.cli import main

    out = tmp_path / "run"
    assert main(["choice", "example1", "--out", str(out)]) == 0
    assert out.is_dir() and not _lock_file(out).exists()
    capfd.readouterr()


def test_ranks_other_than_0_do_not_take_the_lock(tmp_path, monkeypatch, capfd):
    """Under `accelerate launch` every rank runs the command on the same --out; rank 0 holds the lock."""
    from aihf.cli import main
    from aihf.safety import RunLock

    out = tmp_path / "run"
    monkeypatch.setenv("RANK", "1")
    with RunLock(out):
        assert main(["choice", "example1", "--out", str(out)]) == 0
    capfd.readouterr()
