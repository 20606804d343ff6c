"""Untrusted files and runaway values (issue: path escapes, code from data, runaway values).

Unit tests of the shared guards in `aihf.safety`, then a table of hostile or careless inputs run through
`aihf.cli.main`, each expected to give exit 2, exactly one stderr line naming the file or field, and
nothing written.
"""

# ruff: noqa: E501  (the table below reads one case per line)
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aihf.cli import main
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
    assert _run_handler(monkeypatch, ["choice", "solve", "--json", "--demo-counts", "5,5"], error) == 2
    err = _one_line(capfd)
    assert "/data/p.jsonl" in err and error.strerror.lower() in err.lower()


def test_an_os_error_without_a_file_name_is_a_bug_and_raises(monkeypatch):
    with pytest.raises(OSError, match="internal"):
        _run_handler(monkeypatch, ["choice", "solve", "--json", "--demo-counts", "5,5"], OSError("internal"))


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


def test_an_out_in_a_read_only_directory_is_locked_inside(tmp_path, monkeypatch):
    from aihf.safety import RunLock

    out = tmp_path / "out"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real(path, mode))
    with RunLock(out):
        assert (out / ".aihf.lock").read_text() == f"{os.getpid()}\n"
        assert not _lock_file(out).exists()
    assert list(out.iterdir()) == []


def test_the_lock_nests_within_one_process(tmp_path):
    """The CLI takes the lock, then the Python API it calls may take it again."""
    from aihf.safety import RunLock

    out = tmp_path / "out"
    with RunLock(out):
        with RunLock(tmp_path / "." / "out"):  # another spelling of the same path
            assert _lock_file(out).exists()
        assert _lock_file(out).exists()  # still held by the outer one
    assert not _lock_file(out).exists()


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


def test_a_refused_lock_leaves_nothing_behind(tmp_path):
    from aihf.safety import LockedError, RunLock

    holder = _holder(tmp_path / "out", "with RunLock(OUT):\n    print('held', flush=True)\n    input()")
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockedError):
            RunLock(tmp_path / "out").acquire()
    finally:
        holder.communicate("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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
    out = tmp_path / "run"
    holder = _holder(out, "with RunLock(OUT):\n    print('held', flush=True)\n    input()")
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["choice", "example1", "--out", str(out)]) == 2
    finally:
        holder.communicate("\n")
    err = _one_line(capfd)
    assert f"--out {out}: in use by another run (pid {holder.pid}" in err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_releases_the_lock_after_a_run(tmp_path, capfd):
    from aihf.cli import main

    out = tmp_path / "run"
    assert main(["choice", "example1", "--out", str(out)]) == 0
    assert out.is_dir() and not _lock_file(out).exists()
    capfd.readouterr()


def test_ranks_other_than_0_do_not_take_the_lock(tmp_path, monkeypatch, capfd):
    """Under `accelerate launch` every rank runs the command on the same --out; rank 0 holds the lock."""
    out = tmp_path / "run"
    holder = _holder(out, "with RunLock(OUT):\n    print('held', flush=True)\n    input()")
    monkeypatch.setenv("RANK", "1")
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["choice", "example1", "--out", str(out)]) == 0
    finally:
        holder.communicate("\n")
    capfd.readouterr()


# ------------------------------------------------------------------------------------------------------
# the table: hostile or careless inputs through `aihf.cli.main`
#
# Case: (id, argv, files, expected). In argv and in text file contents, {t} is the case's directory,
# {out} the output path (absent before the run), {tiny} the tiny local LM pair. `files` maps names under
# {t} to text, bytes or a function writing that path. Every case: exit 2, exactly one stderr line that
# starts with "aihf", contains `expected`, carries no raw control character, and nothing is written.


def _fifo(path: Path, tiny: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path, tiny: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


def _link(target: str) -> Callable[[Path, Path], None]:
    """A symbolic link to `target` ({t} and {tiny} filled in; may not exist)."""

    def write(path: Path, tiny: Path) -> None:
        path.symlink_to(target.format(t=path.parent, tiny=tiny))

    return write


def _loop(path: Path, tiny: Path) -> None:
    path.symlink_to(path.name)


def _dir(path: Path, tiny: Path) -> None:
    path.mkdir()


def _checkpoint(manifest: str | bytes | None, extra: Callable[[Path], None] | None = None) -> Callable:
    """A control run directory whose checkpoint holds `state.json` and the given manifest text."""

    def write(path: Path, tiny: Path) -> None:
        ckpt = path / "checkpoint"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text("{}")
        (path.parent / "secret.txt").write_text("secret")
        if extra is not None:
            extra(ckpt)
        if isinstance(manifest, bytes):
            (ckpt / "manifest.json").write_bytes(manifest)
        elif manifest is not None:
            (ckpt / "manifest.json").write_text(manifest.replace("{t}", str(path.parent)))

    return write


def _entry(name: str) -> str:
    import json

    return json.dumps({"files": {name: {"size": 6, "sha256": "0" * 64}}})


def _lm_checkpoint(manifest: str) -> Callable[[Path, Path], None]:
    """An LM checkpoint directory (as `resume_from_checkpoint` names) with the given manifest."""

    def write(path: Path, tiny: Path) -> None:
        path.mkdir(parents=True)
        (path.parent / "secret.txt").write_text("secret")
        (path / "manifest.json").write_text(manifest)

    return write


def _finished(*markers: str) -> Callable[[Path, Path], None]:
    """A run directory holding the given final outputs (a finished run)."""

    def write(path: Path, tiny: Path) -> None:
        for marker in markers:
            (path / marker).parent.mkdir(parents=True, exist_ok=True)
            (path / marker).write_text("{}")

    return write


def _control_run(**config: Any) -> Callable[[Path, Path], None]:
    """A control run directory whose checkpoint's state.json holds the default config with `config`."""

    def write(path: Path, tiny: Path) -> None:
        import json

        from aihf.control.config import AIHFControlConfig

        (path / "checkpoint").mkdir(parents=True)
        saved = AIHFControlConfig().to_dict() | config
        (path / "checkpoint" / "state.json").write_text(json.dumps({"config": saved}))

    return write


def _damaged_model(damage: str, which: str = "policy") -> Callable[[Path, Path], None]:
    """A copy of the tiny `which` model whose model.safetensors has a damaged header or body."""

    def write(path: Path, tiny: Path) -> None:
        import shutil
        import struct

        shutil.copytree(tiny / which, path)
        weights = path / "model.safetensors"
        data = weights.read_bytes()
        damaged = {
            "cut-header": data[:100],
            "cut-body": data[:-100],
            "huge-header": struct.pack("<Q", 10**15) + data[8:],
            "empty": b"",
            "text": b"version https://git-lfs.github.com/spec/v1\n",
        }[damage]
        weights.write_bytes(damaged)

    return write


_HELD: list[subprocess.Popen[str]] = []


def _locked(path: Path, tiny: Path) -> None:
    """Another process holds the run lock on `path` (until the case ends), as a concurrent run would."""
    holder = _holder(path, "with RunLock(OUT):\n    print('held', flush=True)\n    input()")
    _HELD.append(holder)
    assert holder.stdout.readline() == "held\n"


def _jsonl(*rows: str) -> str:
    return "".join(f"{r}\n" for r in rows)


def _chat(*messages: str) -> str:
    return _jsonl('{"messages": [' + ", ".join(messages) + "]}")


PAIR = '{"prompt": "The film was", "chosen": " warm.", "rejected": " dull."}'
U = '{"role": "user", "content": "hi"}'
A = '{"role": "assistant", "content": "yo"}'
OK_PREFS = {"p.jsonl": _jsonl(PAIR, PAIR)}
SOLVE = ["choice", "solve", "--json"]
CTRAIN = ["control", "train", "--env", "Pendulum-v1", "--no-progress", "--out", "{out}"]
RESUME = ["control", "train", "--resume", "{t}/run", "--no-progress"]
LM = ["lm", "train", "--model_name_or_path", "{tiny}/policy", "--output_dir", "{out}"]
DPO = [*LM, "--trainer", "dpo", "--prefs", "{t}/p.jsonl"]
SFT = [*LM, "--trainer", "sft", "--demos", "{t}/d.jsonl"]
EVAL = ["lm", "eval", "--policy", "{tiny}/policy", "--prompts", "{t}/q.jsonl"]
LM_RESUME = [*DPO, "--config", "{t}/c.yaml"]
OUTSIDE = "points outside"

# Control characters as they appear in a file name, and as the error line must show them.
CONTROLS = [
    ("esc", "\x1b", "\\x1b"),
    ("csi-clear", "\x1b[2J", "\\x1b[2J"),
    ("osc-title", "\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    ("newline", "\n", "\\n"),
    ("carriage-return", "\r", "\\r"),
    ("tab", "\t", "\\t"),
    ("bell", "\x07", "\\x07"),
    ("backspace", "\x08", "\\x08"),
    ("vertical-tab", "\x0b", "\\x0b"),
    ("form-feed", "\x0c", "\\x0c"),
    ("delete", "\x7f", "\\x7f"),
    ("c1-csi", "\x9b", "\\x9b"),
    ("c1-nel", "\x85", "\\x85"),
    ("bidi-rlo", "\u202e", "\\u202e"),
    ("bidi-isolate", "\u2067", "\\u2067"),
]

# fmt: off
TABLE: list[tuple[str, list[str], dict[str, Any], str]] = [
    # --- path escapes: manifest entries of a control checkpoint (resume) ---
    ("manifest-dotdot", RESUME, {"run": _checkpoint(_entry("../../secret.txt"))}, OUTSIDE),
    ("manifest-dotdot-deep", RESUME, {"run": _checkpoint(_entry("a/b/../../../../secret.txt"))}, OUTSIDE),
    ("manifest-dotdot-state", RESUME, {"run": _checkpoint(_entry("../checkpoint/../../secret.txt"))}, OUTSIDE),
    ("manifest-absolute", RESUME, {"run": _checkpoint(_entry("/etc/passwd"))}, "is an absolute path"),
    ("manifest-absolute-tmp", RESUME, {"run": _checkpoint(_entry("{t}/secret.txt"))}, "is an absolute path"),
    ("manifest-root", RESUME, {"run": _checkpoint(_entry("/"))}, "is an absolute path"),
    ("manifest-dot", RESUME, {"run": _checkpoint(_entry("."))}, OUTSIDE),
    ("manifest-parent", RESUME, {"run": _checkpoint(_entry(".."))}, OUTSIDE),
    ("manifest-empty-name", RESUME, {"run": _checkpoint(_entry(""))}, "expected a relative file name"),
    ("manifest-nul", RESUME, {"run": _checkpoint(_entry("state.json\x00x"))}, "expected a relative file name"),
    ("manifest-link-file", RESUME, {"run": _checkpoint(_entry("link"), lambda c: (c / "link").symlink_to(c.parent.parent / "secret.txt"))}, OUTSIDE),
    ("manifest-link-dir", RESUME, {"run": _checkpoint(_entry("d/secret.txt"), lambda c: (c / "d").symlink_to(c.parent.parent))}, OUTSIDE),
    ("manifest-link-etc", RESUME, {"run": _checkpoint(_entry("etc/passwd"), lambda c: (c / "etc").symlink_to("/etc"))}, OUTSIDE),
    ("manifest-link-relative", RESUME, {"run": _checkpoint(_entry("up/secret.txt"), lambda c: (c / "up").symlink_to("../.."))}, OUTSIDE),
    ("manifest-escape-name", RESUME, {"run": _checkpoint(_entry("../\x1b[2J.txt"))}, "\\x1b[2J"),
    ("manifest-newline-name", RESUME, {"run": _checkpoint(_entry("../a\nb"))}, "\\n"),
    # --- manifests of the wrong shape ---
    ("manifest-list", RESUME, {"run": _checkpoint("[]")}, "damaged checkpoint manifest"),
    ("manifest-null", RESUME, {"run": _checkpoint("null")}, "damaged checkpoint manifest"),
    ("manifest-number", RESUME, {"run": _checkpoint("3")}, "damaged checkpoint manifest"),
    ("manifest-files-list", RESUME, {"run": _checkpoint('{"files": ["state.json"]}')}, "damaged checkpoint manifest"),
    ("manifest-files-text", RESUME, {"run": _checkpoint('{"files": "state.json"}')}, "damaged checkpoint manifest"),
    ("manifest-no-files", RESUME, {"run": _checkpoint('{"file": {}}')}, "damaged checkpoint manifest"),
    ("manifest-entry-number", RESUME, {"run": _checkpoint('{"files": {"state.json": 2}}')}, "damaged checkpoint manifest"),
    ("manifest-size-text", RESUME, {"run": _checkpoint('{"files": {"state.json": {"size": "2", "sha256": "x"}}}')}, "damaged checkpoint manifest"),
    ("manifest-size-bool", RESUME, {"run": _checkpoint('{"files": {"state.json": {"size": true, "sha256": "x"}}}')}, "damaged checkpoint manifest"),
    ("manifest-size-float", RESUME, {"run": _checkpoint('{"files": {"state.json": {"size": 2.0, "sha256": "x"}}}')}, "damaged checkpoint manifest"),
    ("manifest-no-sha", RESUME, {"run": _checkpoint('{"files": {"state.json": {"size": 2}}}')}, "damaged checkpoint manifest"),
    ("manifest-sha-number", RESUME, {"run": _checkpoint('{"files": {"state.json": {"size": 2, "sha256": 5}}}')}, "damaged checkpoint manifest"),
    ("manifest-binary", RESUME, {"run": _checkpoint(b"\xff\xfe\x00\x01")}, "damaged checkpoint manifest"),
    ("manifest-empty", RESUME, {"run": _checkpoint("")}, "damaged checkpoint manifest"),
    ("manifest-truncated", RESUME, {"run": _checkpoint('{"files": {"state.json": {"si')}, "damaged checkpoint manifest"),
    ("manifest-fifo", RESUME, {"run": _checkpoint(None, lambda c: os.mkfifo(c / "manifest.json"))}, "incomplete checkpoint"),
    ("manifest-dir", RESUME, {"run": _checkpoint(None, lambda c: (c / "manifest.json").mkdir())}, "incomplete checkpoint"),
    ("manifest-dangling", RESUME, {"run": _checkpoint(None, lambda c: (c / "manifest.json").symlink_to("nowhere"))}, "incomplete checkpoint"),
    ("manifest-entry-fifo", RESUME, {"run": _checkpoint(_entry("pipe"), lambda c: os.mkfifo(c / "pipe"))}, "pipe: missing from the checkpoint"),
    # --- path escapes and wrong shapes in an LM checkpoint (resume_from_checkpoint) ---
    ("lm-manifest-dotdot", LM_RESUME, {**OK_PREFS, "c.yaml": "resume_from_checkpoint: {t}/ck\n", "ck": _lm_checkpoint(_entry("../secret.txt"))}, OUTSIDE),
    ("lm-manifest-absolute", LM_RESUME, {**OK_PREFS, "c.yaml": "resume_from_checkpoint: {t}/ck\n", "ck": _lm_checkpoint(_entry("/etc/passwd"))}, "is an absolute path"),
    ("lm-manifest-list", LM_RESUME, {**OK_PREFS, "c.yaml": "resume_from_checkpoint: {t}/ck\n", "ck": _lm_checkpoint('{"files": []}')}, "damaged checkpoint manifest"),
    ("lm-manifest-entry", LM_RESUME, {**OK_PREFS, "c.yaml": "resume_from_checkpoint: {t}/ck\n", "ck": _lm_checkpoint('{"files": {"a": null}}')}, "damaged checkpoint manifest"),
    # --- chat messages: role a known string, content a string ---
    ("chat-content-number", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": 3}')}, "d.jsonl, line 1, field 'messages', message 2: 'content' = 3"),
    ("chat-content-float", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": 1e308}')}, "message 2: 'content' = 1e+308"),
    ("chat-content-null", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": null}')}, "message 2: 'content' = None"),
    ("chat-content-list", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": ["a", "b"]}')}, "message 2: 'content' = ['a', 'b']"),
    ("chat-content-object", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": {"text": "yo"}}')}, "message 2: 'content'"),
    ("chat-content-bool", SFT, {"d.jsonl": _chat(U, '{"role": "assistant", "content": false}')}, "message 2: 'content' = False"),
    ("chat-content-missing", SFT, {"d.jsonl": _chat(U, '{"role": "assistant"}')}, "message 2: missing 'content'"),
    ("chat-user-content-number", SFT, {"d.jsonl": _chat('{"role": "user", "content": 0}', A)}, "message 1: 'content' = 0"),
    ("chat-role-number", SFT, {"d.jsonl": _chat('{"role": 1, "content": "hi"}', A)}, "message 1: 'role' = 1: expected one of 'system', 'user', 'assistant', 'tool'"),
    ("chat-role-null", SFT, {"d.jsonl": _chat('{"role": null, "content": "hi"}', A)}, "message 1: 'role' = None"),
    ("chat-role-list", SFT, {"d.jsonl": _chat('{"role": ["user"], "content": "hi"}', A)}, "message 1: 'role' = ['user']"),
    ("chat-role-unknown", SFT, {"d.jsonl": _chat('{"role": "root", "content": "hi"}', A)}, "message 1: 'role' = 'root'"),
    ("chat-role-case", SFT, {"d.jsonl": _chat('{"role": "User", "content": "hi"}', A)}, "message 1: 'role' = 'User'"),
    ("chat-role-escape", SFT, {"d.jsonl": _chat('{"role": "\\u001b[31muser", "content": "hi"}', A)}, "'role' = '\\x1b[31muser'"),
    ("chat-role-missing", SFT, {"d.jsonl": _chat('{"content": "hi"}', A)}, "message 1: missing 'role'"),
    ("chat-message-text", SFT, {"d.jsonl": _chat(U, '"yo"')}, "message 2: expected an object with 'role' and 'content', got str"),
    ("chat-message-number", SFT, {"d.jsonl": _chat(U, "7")}, "message 2: expected an object with 'role' and 'content', got int"),
    ("chat-message-null", SFT, {"d.jsonl": _chat(U, "null")}, "got NoneType"),
    ("chat-line-3", [*SFT, "--config", "{t}/c.yaml"], {"d.jsonl": _chat(U, A) + "\n" + _chat(U, '{"role": "assistant", "content": 3}'), "c.yaml": "chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}'\n"}, "d.jsonl, line 3, field 'messages', message 2"),
    ("chat-prefs-chosen", DPO, {"p.jsonl": _jsonl(f'{{"chosen": [{U}, {{"role": "assistant", "content": 1}}], "rejected": [{U}, {A}]}}')}, "p.jsonl, line 1, field 'chosen', message 2: 'content' = 1"),
    ("chat-prefs-rejected-role", DPO, {"p.jsonl": _jsonl(f'{{"chosen": [{U}, {A}], "rejected": [{U}, {{"role": 5, "content": "x"}}]}}')}, "field 'rejected', message 2: 'role' = 5"),
    ("chat-prefs-prompt", DPO, {"p.jsonl": _jsonl(f'{{"prompt": [{{"role": "user", "content": null}}], "chosen": [{A}], "rejected": [{A}]}}')}, "field 'prompt', message 1: 'content' = None"),
    ("chat-prefs-text-prompt", DPO, {"p.jsonl": _jsonl(f'{{"prompt": "hi", "chosen": [{U}, {{"role": "assistant", "content": []}}], "rejected": [{U}, {A}]}}')}, "field 'chosen', message 2: 'content' = []"),
    ("chat-prefs-list-of-text", DPO, {"p.jsonl": _jsonl('{"prompt": "hi", "chosen": ["a"], "rejected": ["b"]}')}, "field 'chosen', message 1: expected an object"),
    ("chat-eval-prompt", EVAL, {"q.jsonl": _jsonl('{"prompt": [{"role": "user", "content": 9}]}')}, "q.jsonl, line 1, field 'prompt': expected a string"),
    ("chat-eval-messages", EVAL, {"q.jsonl": _jsonl(f'{{"messages": [{{"role": "system", "content": null}}, {U}]}}')}, "q.jsonl, line 1, field 'prompt'"),
    # --- FIFOs, directories, links and binary files where a data or config file is expected ---
    ("fifo-prefs-jsonl", DPO, {"p.jsonl": _fifo}, "p.jsonl: is a FIFO, expected a regular file"),
    ("fifo-demos-jsonl", SFT, {"d.jsonl": _fifo}, "d.jsonl: is a FIFO"),
    ("fifo-prefs-json", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.json"], {"p.json": _fifo}, "p.json: is a FIFO"),
    ("fifo-prefs-parquet", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.parquet"], {"p.parquet": _fifo}, "p.parquet: is a FIFO"),
    ("fifo-eval-prompts", EVAL, {"q.jsonl": _fifo}, "q.jsonl: file not found"),
    ("fifo-lm-config", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": _fifo}, "c.yaml: is a FIFO, expected a regular config file"),
    ("fifo-control-config", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": _fifo}, "c.yaml: is a FIFO"),
    ("fifo-bench-config", ["control", "bench", "--out", "{out}", "--config", "{t}/c.yaml"], {"c.yaml": _fifo}, "c.yaml: is a FIFO"),
    ("socket-prefs-jsonl", DPO, {"p.jsonl": _socket}, "p.jsonl: is a socket, expected a regular file"),
    ("socket-config", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": _socket}, "c.yaml: is a socket"),
    ("fifo-choice-data", [*SOLVE, "--data", "{t}/d.json"], {"d.json": _fifo}, "d.json: no such file"),
    ("fifo-unknown-suffix", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.txt"], {"p.txt": _fifo}, "p.txt: unsupported file type"),
    ("dangling-prefs", DPO, {"p.jsonl": _link("{t}/gone.jsonl")}, "p.jsonl: broken symbolic link (to "),
    ("dangling-prefs-json", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.json"], {"p.json": _link("nowhere.json")}, "p.json: broken symbolic link (to nowhere.json)"),
    ("dangling-prefs-bare", [*LM, "--trainer", "dpo", "--prefs", "{t}/data"], {"data": _link("nowhere")}, "data: broken symbolic link (to nowhere)"),
    ("dangling-config", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": _link("none.yaml")}, "c.yaml: broken symbolic link"),
    ("dangling-control-config", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": _link("none.yaml")}, "c.yaml: broken symbolic link"),
    ("loop-prefs", DPO, {"p.jsonl": _loop}, "p.jsonl: cannot open the file (too many levels of symbolic links)"),
    ("loop-prefs-parquet", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.parquet"], {"p.parquet": _loop}, "too many levels of symbolic links"),
    ("loop-config", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": _loop}, "c.yaml: cannot open the config file (too many levels"),
    ("loop-control-config", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": _loop}, "too many levels of symbolic links"),
    ("link-to-dir-config", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": _link("{t}")}, "config file not found (it is a directory)"),
    ("link-to-fifo-prefs", DPO, {"pipe": _fifo, "p.jsonl": _link("pipe")}, "p.jsonl: is a FIFO"),
    ("path-through-file", [*LM, "--trainer", "dpo", "--prefs", "{t}/f/p.jsonl"], {"f": "x"}, "f/p.jsonl: cannot open the file (not a directory)"),
    ("name-too-long", [*LM, "--trainer", "dpo", "--prefs", "{t}/" + "p" * 300 + ".jsonl"], {}, ".jsonl: file name too long"),
    ("local-path-missing", [*LM, "--trainer", "dpo", "--prefs", "{t}/none/set"], {}, "none/set: file not found"),
    ("relative-path-missing", [*LM, "--trainer", "dpo", "--prefs", "./no-such-set"], {}, "no-such-set: file not found"),
    ("binary-prefs-json", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.json"], {"p.json": b"\xff\xfe\x00\x01\x02"}, "p.json: could not load the dataset"),
    ("binary-prefs-parquet", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.parquet"], {"p.parquet": b"PAR1\x00\x00garbage"}, "p.parquet: could not load the dataset"),
    ("text-as-parquet", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.parquet"], {"p.parquet": PAIR}, "p.parquet: could not load the dataset"),
    ("empty-parquet", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.parquet"], {"p.parquet": b""}, "p.parquet: could not load the dataset"),
    ("utf16-jsonl", DPO, {"p.jsonl": PAIR.encode("utf-16")}, "p.jsonl: not a UTF-8 text file"),
    ("latin1-jsonl", DPO, {"p.jsonl": '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1")}, "p.jsonl: not a UTF-8 text file"),
    ("nul-jsonl", DPO, {"p.jsonl": b"\x00" * 64}, "p.jsonl, line 1: not valid JSON"),
    ("gzip-jsonl", DPO, {"p.jsonl": b"\x1f\x8b\x08\x00" + b"\x00" * 16}, "p.jsonl"),
    ("binary-eval-prompts", EVAL, {"q.jsonl": b"\xff\xd8\xff\xe0"}, "q.jsonl: not a UTF-8 text file"),
    ("eval-prompts-array-line", EVAL, {"q.jsonl": _jsonl('{"prompt": "a"}', "[1]")}, "q.jsonl, line 2: expected a JSON object"),
    ("utf16-config", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "beta: 0.1\n".encode("utf-16")}, "c.yaml: not a text (UTF-8) YAML file"),
    ("dir-config-lm", [*DPO, "--config", "{t}/cfg"], {**OK_PREFS, "cfg": _dir}, "config file not found (it is a directory)"),
    ("dir-prefs-json", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.json"], {"p.json": _dir}, "p.json"),
    ("dir-choice-data", [*SOLVE, "--data", "{t}/d.json"], {"d.json": _dir}, "d.json: no such file"),
    ("yaml-alias-bomb", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"}, "c.yaml: unknown keys"),
    ("yaml-python-tag", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "beta: !!python/object/apply:os.system ['touch pwned']\n"}, "c.yaml, line 1: not valid YAML"),
    ("yaml-python-name", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": "alpha: !!python/name:os.system\n"}, "c.yaml, line 1: not valid YAML"),
    ("yaml-key-escape", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": '"\\e[2Jalpha": 1\n'}, "\\x1b[2Jalpha"),
    ("yaml-lm-key-escape", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": '"be\\nta": 1\n'}, "be\\nta"),
    # --- --out: links, loops and inputs ---
    ("out-dangling-choice", ["choice", "example1", "--out", "{t}/o"], {"o": _link("{t}/gone")}, "--out {t}/o: {t}/o is a broken symbolic link (to {t}/gone)"),
    ("out-dangling-control", [*CTRAIN[:-1], "{t}/o"], {"o": _link("gone")}, "{t}/o is a broken symbolic link (to gone)"),
    ("out-dangling-lm", [*DPO[:5], "{t}/o", *DPO[6:]], {**OK_PREFS, "o": _link("gone")}, "is a broken symbolic link"),
    ("out-dangling-tiny", ["lm", "tiny-model", "--out", "{t}/o"], {"o": _link("gone")}, "is a broken symbolic link"),
    ("out-dangling-quickstart", ["quickstart", "--out", "{t}/o"], {"o": _link("gone")}, "is a broken symbolic link"),
    ("out-dangling-eval", [*EVAL[:4], "--out", "{t}/o.json"], {"o.json": _link("gone.json")}, "{t}/o.json is a broken symbolic link"),
    ("out-dangling-parent", ["choice", "example1", "--out", "{t}/o/run"], {"o": _link("gone")}, "--out {t}/o/run: {t}/o is a broken symbolic link"),
    ("out-loop-choice", ["choice", "example1", "--out", "{t}/o"], {"o": _loop}, "{t}/o is a symbolic link that cannot be followed (too many levels"),
    ("out-loop-control", [*CTRAIN[:-1], "{t}/o"], {"o": _loop}, "cannot be followed"),
    ("out-loop-lm", [*DPO[:5], "{t}/o", *DPO[6:]], {**OK_PREFS, "o": _loop}, "cannot be followed"),
    ("out-loop-parent", ["quickstart", "--out", "{t}/o/a/b"], {"o": _loop}, "--out {t}/o/a/b: {t}/o is a symbolic link that cannot be followed"),
    ("out-loop-eval", [*EVAL[:4], "--out", "{t}/o.json"], {"o.json": _loop}, "cannot be followed"),
    ("out-link-to-file", ["choice", "example1", "--out", "{t}/o"], {"f": "keep me", "o": _link("f")}, "--out {t}/o: is an existing file"),
    ("out-fifo", ["choice", "example1", "--out", "{t}/o"], {"o": _fifo}, "--out {t}/o: is an existing file"),
    ("out-is-model", ["lm", "train", "--model_name_or_path", "{t}/m", "--trainer", "dpo", "--prefs", "{t}/p.jsonl", "--output_dir", "{t}/m"], {**OK_PREFS, "m": _link("{tiny}/policy")}, "--output_dir {t}/m: is the input --model {t}/m"),
    ("out-is-model-copy", ["lm", "train", "--model_name_or_path", "{tiny}/policy", "--trainer", "dpo", "--prefs", "{t}/p.jsonl", "--output_dir", "{t}/m"], {**OK_PREFS, "m": _link("{tiny}/policy")}, "--output_dir {t}/m: is the input --model"),
    ("out-holds-model", ["lm", "train", "--model_name_or_path", "{t}/run/policy", "--trainer", "dpo", "--prefs", "{t}/p.jsonl", "--output_dir", "{t}/run"], {**OK_PREFS, "run": _dir, "run/policy": _link("{tiny}/policy")}, "--output_dir {t}/run: holds the input --model {t}/run/policy, which the run would overwrite"),
    ("out-is-reward-model", [*LM[:-1], "{t}/rm", "--trainer", "aihf", "--reward-model", "{t}/rm", "--prefs", "{t}/p.jsonl"], {**OK_PREFS, "rm": _link("{tiny}/reward_model")}, "--output_dir {t}/rm: is the input --reward-model"),
    ("out-holds-reward-model", [*LM[:-1], "{t}", "--trainer", "aihf", "--reward-model", "{t}/rm", "--prefs", "{t}/p.jsonl"], {**OK_PREFS, "rm": _link("{tiny}/reward_model")}, "--output_dir {t}: holds the input --reward-model"),
    ("out-is-prompts", [*EVAL, "--out", "{t}/q.jsonl"], {"q.jsonl": _jsonl('{"prompt": "a"}')}, "--out {t}/q.jsonl: is the input --prompts {t}/q.jsonl"),
    ("out-is-prompts-link", [*EVAL, "--out", "{t}/alias.jsonl"], {"q.jsonl": _jsonl('{"prompt": "a"}'), "alias.jsonl": _link("q.jsonl")}, "is the input --prompts"),
    ("out-is-eval-policy", ["lm", "eval", "--policy", "{t}/m", "--out", "{t}/m"], {"m": _link("{tiny}/policy")}, "--out {t}/m: is a directory, expected a file"),
    ("out-holds-bench-base", ["lm", "bench", "--out", "{t}", "--quick", "--base-model", "{t}/b"], {"b": _link("{tiny}/policy")}, "--out {t}: holds the input --base-model"),
    # --- one run per --out ---
    # (the benchmark queues take no --out lock: their store claims each job, so workers share --out)
    ("locked-choice", ["choice", "example1", "--out", "{out}"], {"out": _locked}, "--out {t}/out: in use by another run (pid "),
    ("locked-choice-sweep", ["choice", "sweep", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-control", CTRAIN, {"out": _locked}, "--out {t}/out: in use by another run"),
    ("locked-collect", ["control", "collect", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-lm", DPO, {**OK_PREFS, "out": _locked}, "--out {t}/out: in use by another run"),
    ("locked-tiny", ["lm", "tiny-model", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-eval", [*EVAL[:4], "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-quickstart", ["quickstart", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-pretrain", ["lm", "pretrain", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    ("locked-generate-data", ["lm", "generate-data", "--out", "{out}"], {"out": _locked}, "in use by another run"),
    # --- --out holding a finished run (--overwrite replaces it); a resume keeps its settings and data ---
    ("finished-lm-dpo", [*DPO[:5], "{t}/run", *DPO[6:]], {**OK_PREFS, "run": _finished("policy/config.json")}, "--output_dir {t}/run: holds a finished run (policy/config.json); pass --overwrite"),
    ("finished-lm-sft", [*SFT[:5], "{t}/run", *SFT[6:]], {"d.jsonl": _chat(U, A), "run": _finished("policy/config.json")}, "holds a finished run (policy/config.json)"),
    ("finished-lm-aihf", [*LM[:5], "{t}/run", "--trainer", "aihf", "--prefs", "{t}/p.jsonl", "--reward-model", "{tiny}/reward_model"], {**OK_PREFS, "run": _finished("policy/config.json", "reward_model/config.json")}, "holds a finished run (policy/config.json)"),
    ("finished-lm-reward", [*LM[:5], "{t}/run", "--trainer", "reward", "--prefs", "{t}/p.jsonl"], {**OK_PREFS, "run": _finished("reward_model/config.json")}, "holds a finished run (reward_model/config.json)"),
    ("finished-lm-config-trainer", [*LM[:5], "{t}/run", "--prefs", "{t}/p.jsonl", "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "trainer: dpo\n", "run": _finished("policy/config.json")}, "holds a finished run"),
    ("finished-lm-relative-spelling", [*DPO[:5], "{t}/x/../run", *DPO[6:]], {**OK_PREFS, "x": _dir, "run": _finished("policy/config.json")}, "holds a finished run"),
    ("finished-control", [*CTRAIN[:-1], "{t}/run"], {"run": _finished("results.json")}, "--out {t}/run: holds a finished run (results.json); pass --overwrite"),
    ("finished-control-config", ["control", "train", "--config", "{t}/c.yaml", "--out", "{t}/run"], {"c.yaml": "alpha: 1.0\n", "run": _finished("results.json")}, "holds a finished run (results.json)"),
    # --- --out holding an interrupted run: a fresh run would delete or mix with its checkpoints ---
    ("unfinished-lm-dpo", [*DPO[:5], "{t}/run", *DPO[6:]], {**OK_PREFS, "run": _finished("checkpoints/checkpoint-2/manifest.json")}, "--output_dir {t}/run: holds an unfinished run (checkpoints/checkpoint-2); continue it with --resume_from_checkpoint true, or pass --overwrite"),
    ("unfinished-lm-rlhf-stage", [*LM[:5], "{t}/run", "--trainer", "rlhf", "--demos", "{t}/d.jsonl", "--prefs", "{t}/p.jsonl"], {**OK_PREFS, "d.jsonl": _jsonl('{"prompt": "a", "completion": " b"}'), "run": _finished("sft/checkpoints/checkpoint-3/manifest.json")}, "holds an unfinished run (sft/checkpoints/checkpoint-3)"),
    ("unfinished-control", [*CTRAIN[:-1], "{t}/run"], {"run": _finished("checkpoint/state.json")}, "--out {t}/run: holds an unfinished run (checkpoint); continue it with --resume {t}/run, or pass --overwrite"),
    ("unfinished-control-cut-save", [*CTRAIN[:-1], "{t}/run"], {"run": _finished(".checkpoint.old/state.json")}, "holds an unfinished run (.checkpoint.old)"),
    ("resume-control-other-alpha", [*RESUME, "--alpha", "5"], {"run": _control_run()}, "--resume {t}/run: the checkpoint was trained with other settings (alpha: 1.0 -> 5.0)"),
    ("resume-control-other-seed", [*RESUME, "--seed", "7"], {"run": _control_run(seed=0)}, "(seed: 0 -> 7)"),
    ("resume-control-other-env", [*RESUME, "--env", "MountainCarContinuous-v0"], {"run": _control_run()}, "env_id: 'Pendulum-v1' -> 'MountainCarContinuous-v0'"),
    ("resume-control-two-fields", [*RESUME, "--alpha", "5", "--reward-lr", "0.5"], {"run": _control_run()}, "alpha: 1.0 -> 5.0; reward_lr:"),
    ("resume-control-config", [*RESUME, "--config", "{t}/c.yaml"], {"run": _control_run(), "c.yaml": "reward_lr: 0.5\n"}, "(reward_lr: "),
    ("resume-control-shorter", [*RESUME, "--config", "{t}/c.yaml"], {"run": _control_run(), "c.yaml": "n_timesteps: 100\n"}, "n_timesteps 100 is below the run's 20000; a resume can only extend it"),
    ("resume-control-bad-flag", [*RESUME, "--alpha", "nan"], {"run": _control_run()}, "field 'alpha' = 'nan'"),
    ("resume-control-demos", [*RESUME, "--demos", "{t}/d.npz"], {"run": _control_run()}, "--resume {t}/run: --demos cannot be combined with a resume"),
    ("resume-control-prefs", [*RESUME, "--prefs", "{t}/p.npz"], {"run": _control_run()}, "--prefs cannot be combined with a resume"),
    ("resume-control-overwrite", [*RESUME, "--overwrite"], {"run": _control_run()}, "--overwrite cannot be combined with a resume"),
    ("resume-control-other-out", [*RESUME, "--out", "{t}/elsewhere"], {"run": _control_run()}, "--out cannot be combined with a resume"),
    # --- resource bounds: a batch, accumulation or buffer that cannot fit is refused before work ---
    ("memory-lm-batch", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "per_device_train_batch_size: 1000000000\n"}, "c.yaml: per_device_train_batch_size 1000000000 x max_length 512 x vocab"),
    ("memory-lm-batch-sft", [*SFT, "--config", "{t}/c.yaml"], {"d.jsonl": _chat(U, A), "c.yaml": "per_device_train_batch_size: 1000000000\n"}, "x 4 bytes of logits per micro-batch = "),
    ("memory-lm-max-length", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "per_device_train_batch_size: 100000\nmax_length: 100000\n"}, "per_device_train_batch_size 100000 x max_length 100000"),
    ("memory-lm-accumulation", [*DPO, "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "gradient_accumulation_steps: 1000000000\n"}, "batch_size 8 x gradient_accumulation_steps 1000000000 rows drawn per optimiser step"),
    ("memory-lm-accumulation-direct", [*LM, "--trainer", "direct-aihf", "--prefs", "{t}/p.jsonl", "--demos", "{t}/d.jsonl", "--config", "{t}/c.yaml"], {**OK_PREFS, "d.jsonl": _chat(U, A), "c.yaml": "gradient_accumulation_steps: 1000000000\n"}, "gradient_accumulation_steps 1000000000"),
    ("memory-lm-prompt-batch", [*LM, "--trainer", "aihf", "--prefs", "{t}/p.jsonl", "--reward-model", "{tiny}/reward_model", "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "prompt_batch_size: 1000000000\n"}, "prompt_batch_size x num_generations 4000000000 x max_length"),
    ("memory-lm-num-samples", [*LM, "--trainer", "aihf", "--prefs", "{t}/p.jsonl", "--reward-model", "{tiny}/reward_model", "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "num_generations: 1000000000\n"}, "prompt_batch_size x num_generations 4000000000"),
    ("memory-lm-reward-batch", [*LM, "--trainer", "aihf", "--prefs", "{t}/p.jsonl", "--reward-model", "{tiny}/reward_model", "--config", "{t}/c.yaml"], {**OK_PREFS, "c.yaml": "reward_batch_size: 1000000000\n"}, "reward_batch_size 1000000000 x max_length"),
    ("memory-control-sac-batch", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": "batch_size: 1000000000\n"}, "batch_size 1000000000 x 778 numbers x 4 bytes per batch (Pendulum-v1"),
    ("memory-control-reward-batch", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": "reward_batch_size: 1000000000\n"}, "reward_batch_size 1000000000 x"),
    ("memory-control-bc-batch", [*CTRAIN, "--algo", "bc", "--config", "{t}/c.yaml"], {"c.yaml": "bc_batch_size: 1000000000\n"}, "bc_batch_size 1000000000 x"),
    ("memory-control-wide-net", [*CTRAIN, "--config", "{t}/c.yaml"], {"c.yaml": "policy_kwargs: {net_arch: [1000000000, 1000000000]}\n"}, "net_arch [1000000000, 1000000000]"),
    # --- --env: an unknown id is refused before gymnasium imports anything; MODULE:ID imports MODULE ---
    ("env-typo", ["control", "train", "--env", "Pendulm-v1", "--no-progress", "--out", "{out}"], {}, "--env Pendulm-v1: not a registered gymnasium environment (did you mean Pendulum-v1"),
    ("env-path", ["control", "train", "--env", "../../etc/passwd", "--no-progress", "--out", "{out}"], {}, "'../../etc/passwd' is not a gymnasium id"),
    ("env-module-bad-id", ["control", "train", "--env", "os:../x", "--no-progress", "--out", "{out}"], {}, "--env os:../x: '../x' is not a gymnasium id"),
    ("env-module-not-a-name", ["control", "train", "--env", "a b;c:Foo-v0", "--no-progress", "--out", "{out}"], {}, "'a b;c' is not a Python module name"),
    ("env-module-missing", ["control", "train", "--env", "no_such_module_xyz:Foo-v0", "--no-progress", "--out", "{out}"], {}, "cannot import its module (ModuleNotFoundError"),
    ("env-module-registers-nothing", ["control", "train", "--env", "json:Foo-v0", "--no-progress", "--out", "{out}"], {}, "--env json:Foo-v0: not a registered gymnasium environment"),
    ("env-escape", ["control", "train", "--env", "Foo\x1b[2J-v0", "--no-progress", "--out", "{out}"], {}, "\\x1b[2J"),
    ("env-collect-typo", ["control", "collect", "--env", "Pendulm-v1", "--out", "{out}"], {}, "--env Pendulm-v1"),
    ("env-bench-typo", ["control", "bench", "--env", "Pendulm-v1", "--out", "{out}"], {}, "Pendulm-v1"),
    # --- damaged weights: refused from the header alone, before --out exists or any weights load ---
    ("weights-cut-header", [*DPO[:2], "--model_name_or_path", "{t}/m", *DPO[4:]], {**OK_PREFS, "m": _damaged_model("cut-header")}, "--model_name_or_path {t}/m: model.safetensors: not a readable safetensors file (Error while deserializing header: invalid header length)"),
    ("weights-cut-body", [*DPO[:2], "--model_name_or_path", "{t}/m", *DPO[4:]], {**OK_PREFS, "m": _damaged_model("cut-body")}, "incomplete metadata, file not fully covered"),
    ("weights-huge-header", [*DPO[:2], "--model_name_or_path", "{t}/m", *DPO[4:]], {**OK_PREFS, "m": _damaged_model("huge-header")}, "header too large"),
    ("weights-empty", [*DPO[:2], "--model_name_or_path", "{t}/m", *DPO[4:]], {**OK_PREFS, "m": _damaged_model("empty")}, "model.safetensors: not a readable safetensors file"),
    ("weights-lfs-pointer", [*DPO[:2], "--model_name_or_path", "{t}/m", *DPO[4:]], {**OK_PREFS, "m": _damaged_model("text")}, "model.safetensors: not a readable safetensors file"),
    ("weights-reward-model", [*LM, "--trainer", "aihf", "--prefs", "{t}/p.jsonl", "--reward-model", "{t}/rm"], {**OK_PREFS, "rm": _damaged_model("cut-body", "reward_model")}, "--reward-model {t}/rm: model.safetensors: not a readable"),
    ("weights-eval-policy", ["lm", "eval", "--policy", "{t}/m", "--out", "{out}"], {"m": _damaged_model("huge-header")}, "--policy {t}/m: model.safetensors"),
    ("weights-eval-reference", ["lm", "eval", "--policy", "{tiny}/policy", "--reference", "{t}/m"], {"m": _damaged_model("cut-header")}, "--reference {t}/m: model.safetensors"),
    ("locked-relative-spelling", ["choice", "example1", "--out", "{t}/x/../out"], {"x": _dir, "out": _locked}, "in use by another run"),
]
TABLE += [
    (f"control-bytes-{name}-choice-data", [*SOLVE, "--data", f"{{t}}/d{raw}.json"], {}, f"d{shown}.json: no such file")
    for name, raw, shown in CONTROLS
]
TABLE += [
    (f"control-bytes-{name}-lm-prefs", [*LM, "--trainer", "dpo", "--prefs", f"{{t}}/p{raw}.jsonl"], {}, f"p{shown}.jsonl: file not found")
    for name, raw, shown in CONTROLS[:8]
]
TABLE += [
    (f"control-bytes-{name}-control-config", [*CTRAIN, "--config", f"{{t}}/c{raw}.yaml"], {}, f"c{shown}.yaml: config file not found")
    for name, raw, shown in CONTROLS[:8]
]
TABLE += [
    (f"control-bytes-{name}-out-file", ["choice", "example1", "--out", f"{{t}}/f{raw}"], {f"f{raw}": "keep me"}, f"--out {{t}}/f{shown}: is an existing file")
    for name, raw, shown in CONTROLS[:6]
]
TABLE += [
    (f"control-bytes-{name}-bad-json-line", DPO, {"p.jsonl": _jsonl(PAIR, '{"prompt": "' + raw + '", ')}, "p.jsonl, line 2: not valid JSON")
    for name, raw, _ in CONTROLS[:4]
]
TABLE += [
    (f"control-bytes-{name}-in-existing-file-name", [*LM, "--trainer", "dpo", "--prefs", f"{{t}}/p{raw}.jsonl"], {f"p{raw}.jsonl": _jsonl(PAIR, "[1]")}, f"p{shown}.jsonl, line 2: expected a JSON object")
    for name, raw, shown in CONTROLS[:4]
]
# fmt: on


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aihf.lm.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


def _prepare(argv: list[str], files: dict[str, Any], tmp: Path, tiny: Path) -> tuple[list[str], Path]:
    fill = {"t": str(tmp), "out": str(tmp / "out"), "tiny": str(tiny)}
    for name, content in files.items():
        path = tmp / name
        if callable(content):
            content(path, tiny)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{t}", str(tmp)))
    return [a.format(**fill) for a in argv], tmp / "out"


def _snapshot(root: Path) -> dict[str, Any]:
    """Every entry under `root`: file bytes, link targets, and the kind of anything else."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir" if path.is_dir() else "other"
    return found


RAW_CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x202E, 0x2067)}


def test_the_table_is_large_enough():
    assert len(TABLE) >= 150
    assert len({case[0] for case in TABLE}) == len(TABLE)


@pytest.mark.parametrize(("argv", "files", "expected"), [pytest.param(*c[1:], id=c[0]) for c in TABLE])
def test_untrusted_input_is_one_line_exit_2_and_writes_nothing(argv, files, expected, tiny, tmp_path, capfd):
    try:
        argv, out = _prepare(argv, files, tmp_path, tiny)
        expected = expected.format(t=tmp_path)
        before = _snapshot(tmp_path)
        try:
            code = main(argv)
        except SystemExit as exit_info:  # argparse's own usage errors
            code = exit_info.code
        captured = capfd.readouterr()
        lines = captured.err.strip("\n").split("\n")
        assert code == 2, captured.err
        assert len(lines) == 1 and lines[0].startswith("aihf"), captured.err
        assert expected in lines[0], lines[0]
        assert not RAW_CONTROL & set(lines[0]), repr(lines[0])
        assert "Traceback" not in captured.err and captured.out == ""
        assert _snapshot(tmp_path) == before  # inputs untouched, nothing new beside them
        assert not out.exists()
        assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    finally:
        while _HELD:
            _HELD.pop().communicate("\n")


# ------------------------------------------------------------------------------------------------------
# unreadable files. Root reads files whatever their mode, so these tests deny access by patching: the
# permission check (`os.access`) for the up-front refusal, and `open` for a file that becomes unreadable
# between that check and the read. A real chmod test runs only as a normal user.


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == denied and mode & os.R_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


LM_DPO = ["lm", "train", "--model_name_or_path", "{tiny}/policy", "--output_dir", "{t}/o", "--trainer", "dpo"]


@pytest.mark.parametrize(
    ("argv", "name", "expected"),
    [
        ([*LM_DPO, "--prefs", "{t}/p.jsonl"], "p.jsonl", "p.jsonl: cannot read the file (permission denied)"),
        ([*LM_DPO, "--prefs", "{t}/p.json"], "p.json", "p.json: cannot read the file (permission denied)"),
        (
            ["control", "train", "--out", "{t}/o", "--config", "{t}/c.yaml"],
            "c.yaml",
            "c.yaml: cannot read the config file (permission denied)",
        ),
        (
            [*LM_DPO, "--prefs", "{t}/p.jsonl", "--config", "{t}/c.yaml"],
            "c.yaml",
            "c.yaml: cannot read the config file (permission denied)",
        ),
    ],
    ids=["lm-jsonl", "lm-json", "control-yaml", "lm-yaml"],
)
def test_an_unreadable_input_is_refused_before_it_is_opened(
    argv, name, expected, tiny, tmp_path, monkeypatch, capfd
):
    for file in ("p.jsonl", "p.json"):
        (tmp_path / file).write_text(_jsonl(PAIR, PAIR))
    (tmp_path / "c.yaml").write_text("seed: 1\n")
    _deny(monkeypatch, tmp_path / name)
    assert main([a.format(t=tmp_path, tiny=tiny) for a in argv]) == 2
    assert expected in _one_line(capfd)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("reader", ["jsonl", "yaml", "choice-json"])
def test_a_file_unreadable_at_the_moment_of_reading_is_one_line(reader, tmp_path, monkeypatch, capfd):
    """The permission check passed, then open() fails (the mode changed in between): still one line."""
    target = {"jsonl": "p.jsonl", "yaml": "c.yaml", "choice-json": "d.json"}[reader]
    (tmp_path / target).write_text(
        _jsonl(PAIR) if reader == "jsonl" else "seed: 1\n" if reader == "yaml" else "{}"
    )
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self.name == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    if reader == "jsonl":
        from aihf.lm.data import load_records

        with pytest.raises(InputError, match=r"p\.jsonl: cannot read the file \(permission denied\)"):
            load_records(tmp_path / target)
        return
    argv = {
        "yaml": ["control", "train", "--out", str(tmp_path / "o"), "--config", str(tmp_path / target)],
        "choice-json": ["choice", "solve", "--json", "--data", str(tmp_path / target)],
    }[reader]
    assert main(argv) == 2
    err = _one_line(capfd)
    assert f"{target}: " in err and "permission denied" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_chmod_000_input_is_refused(tmp_path, capfd):
    (tmp_path / "c.yaml").write_text("seed: 1\n")
    (tmp_path / "c.yaml").chmod(0)
    assert main(["control", "train", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "c.yaml: cannot read the config file (permission denied)" in _one_line(capfd)


# ------------------------------------------------------------------------------------------------------
# checkpoint state without pickle


# ------------------------------------------------------------------------------------------------------
# a full disk


def _run_handler(monkeypatch: pytest.MonkeyPatch, argv: list[str], error: OSError) -> int:
    """main(argv) with the command's handler replaced by one that raises `error`."""
    from aihf import cli

    parser = cli.build_parser()
    args = parser.parse_args(argv)

    def handler(args):
        raise error

    monkeypatch.setattr(args, "handler", handler)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    return cli.main(argv)


@pytest.mark.parametrize("layout", ["lm", "control", "none"])
def test_a_full_disk_is_one_line_naming_the_last_complete_checkpoint(layout, tmp_path, monkeypatch, capfd):
    import errno

    from aihf.checkpoints import write_manifest

    out = tmp_path / "run"
    if layout == "lm":
        for step in (2, 4, 10):
            (out / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
            (out / "checkpoints" / f"checkpoint-{step}" / "w").write_text("w")
        write_manifest(out / "checkpoints" / "checkpoint-2")
        write_manifest(out / "checkpoints" / "checkpoint-4")  # checkpoint-10 was cut short: no manifest
        expected = f"the last complete checkpoint is {out}/checkpoints/checkpoint-4"
    elif layout == "control":
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "state.json").write_text("{}")
        write_manifest(out / "checkpoint")
        expected = f"the last complete checkpoint is {out}/checkpoint"
    else:
        expected = "no complete checkpoint was saved"
    error = OSError(errno.ENOSPC, "No space left on device")  # a write() error names no file
    assert _run_handler(monkeypatch, ["choice", "example1", "--out", str(out)], error) == 2
    err = _one_line(capfd)
    assert f"no space left on device (writing under --out {out}); {expected}" in err


# ------------------------------------------------------------------------------------------------------
# a damaged conversion marker of `aihf lm get-model` means "convert again", whatever its bytes


@pytest.mark.parametrize(
    "marker", [b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"{"], ids=["binary", "list", "string", "torn"]
)
def test_a_damaged_model_marker_is_converted_again(tmp_path, marker):
    from aihf.lm.pretrained import MARKER, get_model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MARKER).write_bytes(marker)
    with pytest.raises(InputError, match=r"none\.gguf: GGUF file not found"):
        get_model("smollm2-135m-instruct", out=tmp_path / "m", gguf=tmp_path / "none.gguf")


# ------------------------------------------------------------------------------------------------------
# --overwrite, and a resume with the checkpoint's own settings


def _one_step_dpo(tiny: Path, tmp_path: Path) -> list[str]:
    """`lm train` of one DPO step on the tiny policy into tmp_path/run (its data and config written)."""
    (tmp_path / "p.jsonl").write_text(_jsonl(PAIR, PAIR))
    (tmp_path / "c.yaml").write_text("per_device_train_batch_size: 2\nreport_to: none\n")
    argv = ["lm", "train", "--trainer", "dpo", "--model_name_or_path", str(tiny / "policy")]
    argv += ["--max-steps", "1", "--prefs", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "run")]
    return [*argv, "--config", str(tmp_path / "c.yaml")]


def test_overwrite_trains_again_into_a_finished_lm_run(tiny, tmp_path, capfd):
    argv = _one_step_dpo(tiny, tmp_path)
    assert main(argv) == 0
    assert main(argv) == 2
    assert "holds a finished run (policy/config.json)" in capfd.readouterr().err
    (tmp_path / "run" / "policy" / "model.safetensors").unlink()  # the rerun writes it again
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()


def test_overwrite_deletes_an_interrupted_lm_runs_checkpoints(tiny, tmp_path, capfd):
    """An interrupted run's checkpoints are refused, then deleted by --overwrite: a later resume must not
    pick up a checkpoint of the old run."""
    argv = _one_step_dpo(tiny, tmp_path)
    stale = tmp_path / "run" / "checkpoints" / "checkpoint-7"
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")
    assert main(argv) == 2
    assert "holds an unfinished run (checkpoints/checkpoint-7)" in capfd.readouterr().err
    assert stale.is_dir()
    assert main([*argv, "--overwrite"]) == 0
    assert not stale.exists() and (tmp_path / "run" / "policy" / "model.safetensors").is_file()


def _fake_control_train(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    import aihf.control.train

    calls: list[tuple[Any, ...]] = []

    def train(cfg, out, *args, resume=False, **kwargs):
        calls.append((cfg, out, resume))
        return {
            "algo": "aihf",
            "env": "Pendulum-v1",
            "eval_return_mean": 0.0,
            "eval_return_std": 0.0,
            "env_steps": 1,
        }

    monkeypatch.setattr(aihf.control.train, "train", train)
    monkeypatch.setattr(aihf.control.train, "load_run_data", lambda *args: (None, None))
    return calls


def test_overwrite_trains_again_into_a_finished_control_run(tmp_path, monkeypatch, capfd):
    calls = _fake_control_train(monkeypatch)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    argv = ["control", "train", "--env", "Pendulum-v1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 2 and not calls
    assert "holds a finished run (results.json)" in capfd.readouterr().err
    assert main([*argv, "--overwrite"]) == 0 and len(calls) == 1


def test_overwrite_trains_again_into_an_interrupted_control_run(tmp_path, monkeypatch, capfd):
    calls = _fake_control_train(monkeypatch)
    _control_run()(tmp_path / "run", tmp_path)
    argv = ["control", "train", "--env", "Pendulum-v1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 2 and not calls
    assert f"continue it with --resume {tmp_path / 'run'}" in capfd.readouterr().err
    assert main([*argv, "--overwrite"]) == 0 and len(calls) == 1


def test_a_control_resume_with_its_own_settings_goes_on(tmp_path, monkeypatch, capfd):
    calls = _fake_control_train(monkeypatch)
    _control_run(alpha=2.0)(tmp_path / "run", tmp_path)
    run = str(tmp_path / "run")
    assert main(["control", "train", "--resume", run, "--alpha", "2", "--out", run, "--no-progress"]) == 0
    assert calls == [(None, run, True)]
    assert main(["control", "train", "--resume", run, "--alpha", "1", "--no-progress"]) == 2
    assert "(alpha: 2.0 -> 1.0)" in capfd.readouterr().err and len(calls) == 1


def test_a_replay_buffer_larger_than_memory_is_refused_before_sac_allocates(monkeypatch):
    import aihf.safety
    from aihf.control.config import AIHFControlConfig
    from aihf.control.train import check_run_memory

    monkeypatch.setattr(aihf.safety, "available_memory", lambda cuda=False: (10**8, "memory available"))
    with pytest.raises(InputError, match=r"n_timesteps 10000000 x 10 numbers x 4 bytes of SAC replay buffer"):
        check_run_memory(AIHFControlConfig(n_timesteps=10**7))  # Pendulum: 3 + 3 + 1 + 3 numbers a step
    check_run_memory(AIHFControlConfig(n_timesteps=10**5))  # 4 MB


def test_available_memory_and_sizes():
    from aihf.safety import _size, available_memory, check_memory

    have, what = available_memory()
    assert have > 0 and what == "memory available"
    check_memory(1, "one byte", "never")
    with pytest.raises(InputError, match=r"^x = 1.0 PB, more than the .* of memory available; lower it$"):
        check_memory(10**15, "x", "lower it")
    assert [_size(n) for n in (999, 1000, 36 * 10**9, 3 * 10**18)] == [
        "999 bytes",
        "1.0 KB",
        "36.0 GB",
        "3000.0 PB",
    ]


# ------------------------------------------------------------------------------------------------------
# a real process: no library log line, warning or progress bar before the one error line (a process
# each, 4-10 s: the default suite keeps one LM and one control path, the rest are slow-marked; every
# message is also checked in-process above)


@pytest.mark.parametrize(
    ("argv", "files", "expected"),
    [
        pytest.param(
            [*DPO[:6], "--trainer", "dpo", "--prefs", "{t}/p.jsonl", "--config", "{t}/c.yaml"],
            {**OK_PREFS, "c.yaml": "per_device_train_batch_size: 1000000000\n"},
            "x 4 bytes of logits per micro-batch",
            marks=pytest.mark.slow,
        ),
        (
            [*DPO[:4], "--output_dir", "{t}/run", "--trainer", "dpo", "--prefs", "{t}/p.jsonl"],
            {**OK_PREFS, "run": _finished("policy/config.json")},
            "holds a finished run",
        ),
        pytest.param(
            [*EVAL, "--n-prompts", "2"],
            {"q.jsonl": _jsonl('{"prompt": "a"}', '{"prompt": 3}')},
            "q.jsonl, line 2",
            marks=pytest.mark.slow,
        ),
        # the tiny policy against the shipped base model: the tokenizers differ, found before weights load
        pytest.param(
            [*EVAL[:4], "--n-prompts", "2"],
            {},
            "policy and reference tokenizers differ",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["control", "train", "--config", "{t}/c.yaml", "--out", "{out}", "--no-progress"],
            {"c.yaml": "batch_size: 1000000000\n"},
            "batch_size 1000000000",
            marks=pytest.mark.slow,
        ),
        (["control", "train", "--env", "Pendulm-v1", "--out", "{out}"], {}, "did you mean Pendulum-v1"),
    ],
    ids=[
        "lm-train-memory",
        "lm-train-finished",
        "lm-eval-prompts",
        "lm-eval-vocab",
        "control-train-memory",
        "control-train-env",
    ],
)
def test_a_real_process_prints_exactly_the_error_line(argv, files, expected, tiny, tmp_path):
    """In-process capture can miss handlers bound to the original stderr; a real process cannot."""
    argv, out = _prepare(argv, files, tmp_path, tiny)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "aihf", *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    prefix = f"aihf {argv[0]} {argv[1]}: error: "  # the subcommand's path, e.g. `aihf lm train: error: `
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(prefix), proc.stderr
    assert expected in proc.stderr and not out.exists()


@pytest.mark.parametrize("name", ["../outside", "/etc/x", "a/../../b", "../../x"])
def test_a_job_name_leading_out_of_the_store_is_refused(tmp_path, name):
    """A method or job name from a protocol or record never makes a bench read or write outside --out."""
    from aihf.experiments.jobs import Job
    from aihf.experiments.store import Store

    job = Job(method="aihf", seed=0, name=name)
    with pytest.raises(InputError, match="job name"):
        Store(tmp_path / "out").run_dir(job)
    with pytest.raises(InputError, match="job name"):
        Store(tmp_path / "out", records=tmp_path / "records").finished(job)
    with pytest.raises(InputError, match="job name"):
        Store(tmp_path / "out").export(job, {}, tmp_path / "exported")
    layout = Store(tmp_path / "out", layout=lambda root, job: root / job.method / f"seed{job.seed}")
    with pytest.raises(InputError, match="run directory"):
        layout.run_dir(Job(method="../../x", seed=0))
    assert layout.run_dir(Job(method="aihf", seed=1)) == tmp_path / "out" / "aihf" / "seed1"
    assert not list(tmp_path.rglob("*"))
