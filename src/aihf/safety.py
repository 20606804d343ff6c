"""Guards against untrusted files and runaway values, shared by every domain.

Everything here raises `InputError` subclasses, so the CLI turns each refusal into one line and exit 2:

- `safe_child`: a file name read from a manifest, record or data file must resolve inside its directory
  (no `../`, no absolute path, no symlink pointing out), or a crafted file reads or writes elsewhere.
- `escape_terminal`: control bytes from file names and data are shown escaped, never sent raw to the
  terminal (an ESC sequence could rewrite the screen; a newline would split the one error line).
- `RunLock`: one run per output directory; two runs on one `--out` would interleave logs and overwrite
  each other's checkpoints.
- `refuse_out_over_input`: an `--out` that is an input, holds one, or holds a finished run is refused.
- `check_finite` / `check_finite_weights`: stop at the first non-finite loss or gradient norm, and never
  save non-finite weights as a result.
- `load_weights`: weights files load without running code (safetensors, or `torch.load` restricted to
  tensors); a pickle that needs more is refused.
- `check_hub_name`: a Hub model name that cannot load offline fails at once with one line, instead of a
  dozen retry messages and 30 s of waiting.
- `check_memory`: a batch or buffer that cannot fit in memory is refused before work with its estimate,
  instead of allocating until the system kills the run.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aihf.errors import InputError

# ------------------------------------------------------------------------------------------------------
# paths


def safe_child(directory: str | os.PathLike[str], name: str, what: str = "file name") -> Path:
    """`directory / name`, refused unless it stays inside `directory` once resolved.

    Refuses absolute names, `..` that climbs out, symlinks (at any level) that point out, NUL bytes
    and empty names. `what` says where the name came from, e.g. "manifest entry".
    """
    root = Path(directory)
    shown = escape_terminal(repr(name)) if isinstance(name, str) else type(name).__name__
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"{root}: {what} {shown}: expected a relative file name")
    candidate = Path(name)
    if candidate.is_absolute() or candidate.drive:
        raise InputError(f"{root}: {what} {shown} is an absolute path; refusing a path outside {root}")
    try:
        resolved_root = root.resolve()
        resolved = (root / candidate).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise InputError(f"{root}: {what} {shown}: cannot be resolved ({_reason(err)})") from None
    if not resolved.is_relative_to(resolved_root) or resolved == resolved_root:
        raise InputError(f"{root}: {what} {shown} points outside {root}; refusing it")
    return root / candidate


def refuse_out_over_input(
    out: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    files: Mapping[str, str | os.PathLike[str] | None] | None = None,
    overwrite: bool = False,
    finished: Sequence[str] = ("policy/config.json", "policy/adapter_config.json", "results.json"),
    option: str = "--out",
    unfinished: Sequence[str] = (),
    resume_hint: str = "",
) -> None:
    """Refuse an output that would destroy an input, a finished run or an interrupted one, before any work.

    `inputs` maps the flag of each input model or directory (e.g. "--model") to its path: an `--out`
    that is one or holds one is refused (a run writes `OUT/policy`, `OUT/reward_model`, ...). `files`
    maps data and config files: only an `--out` that is one of them is refused (a data file kept inside a
    run directory is not overwritten). Paths that do not exist (a Hub name, None) are skipped.
    `--overwrite` never makes reading and writing the same files safe; it only allows an `--out` holding
    a finished run (any of `finished`, relative to it), which is refused otherwise. `unfinished` are glob
    patterns (relative to `out`) of an interrupted run's checkpoints: a fresh run would delete or mix with
    them, so it is refused too, naming `resume_hint` (how to continue it) and `--overwrite`.
    """
    target = _resolved(Path(out))
    every = [(flag, value, True) for flag, value in inputs.items()]
    every += [(flag, value, False) for flag, value in (files or {}).items()]
    for flag, value, may_not_hold in every:
        if value is None or not Path(value).exists():
            continue
        source = _resolved(Path(value))
        lexical = Path(os.path.abspath(value))  # a symlinked input inside --out is still inside it
        if source == target:
            raise InputError(
                f"{option} {_show(out)}: is the input {flag} {_show(value)}; choose another {option}"
            )
        if may_not_hold and (source.is_relative_to(target) or lexical.is_relative_to(os.path.abspath(out))):
            raise InputError(
                f"{option} {_show(out)}: holds the input {flag} {_show(value)}, which the run would "
                f"overwrite; choose another {option}"
            )
    if overwrite:
        return
    for marker in finished:
        if (Path(out) / marker).is_file():
            raise InputError(
                f"{option} {_show(out)}: holds a finished run ({marker}); pass --overwrite to replace it "
                "or choose another directory"
            )
    for pattern in unfinished:
        found = sorted(Path(out).glob(pattern))
        if found:
            shown = _show(found[-1].relative_to(out))
            raise InputError(
                f"{option} {_show(out)}: holds an unfinished run ({shown}); {resume_hint or 'resume it'}, "
                "or pass --overwrite to start again (its checkpoints are deleted)"
            )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as err:
        raise InputError(f"{_show(path)}: cannot be resolved ({_reason(err)})") from None


# ------------------------------------------------------------------------------------------------------
# terminal output

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates reorder what the terminal shows ("Trojan Source").
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def escape_terminal(text: str) -> str:
    """`text` with C0/C1 control characters, DEL and bidi overrides shown as escapes (`\\x1b`, `\\n`)."""
    return "".join(_escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F or char in _BIDI:
        return _ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    return char


def _show(path: str | os.PathLike[str]) -> str:
    return escape_terminal(os.fspath(path))


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or type(err).__name__


# ------------------------------------------------------------------------------------------------------
# one run per output directory

LOCK_SUFFIX = ".aihf.lock"


class LockedError(InputError):
    """Another live process holds the output's lock."""


# Locks this process holds, and how many RunLocks share each: taking a lock again in the same process
# (the CLI takes it, then the Python API it calls) nests instead of refusing itself.
_HELD_HERE: dict[Path, int] = {}


class RunLock:
    """An exclusive lock on an output path: `.NAME.aihf.lock` beside it, holding the owner's pid.

    The lock is an `flock` on that file, which the kernel drops when its process dies, so a lock left by
    a killed or crashed run is taken over; a live holder is refused with the pid it wrote. The file lies
    beside the output, not in it, so taking the lock writes nothing into `out` and leaves checks such
    as "is --out empty?" and whole-directory replaces undisturbed (only when the directory holding --out
    is read-only does the lock go inside it, as `OUT/.aihf.lock`); parent directories it had to create
    are removed again on release when still empty (a refused run leaves nothing behind). Within one
    process the lock nests: a second RunLock on the same output shares the first.
    """

    def __init__(self, out: str | os.PathLike[str], option: str = "--out") -> None:
        self.out = Path(out)
        target = _resolved(self.out)  # one lock whatever the spelling (relative, via a symlink)
        self.path = target.with_name(f".{target.name}{LOCK_SUFFIX}")
        if target.is_dir() and self.path.parent.exists() and not os.access(self.path.parent, os.W_OK):
            self.path = target / LOCK_SUFFIX  # --out is a writable directory in a read-only one
        self.option = option
        self._created: list[Path] = []
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> None:
        import fcntl

        if self.path in _HELD_HERE:  # this process already runs there (the CLI, then the Python API)
            _HELD_HERE[self.path] += 1
            self._nested = True
            return
        missing = []
        parent = self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            self._created.append(directory)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                self._remove_created()
                raise LockedError(
                    f"{self.option} {_show(self.out)}: in use by another run (pid {_show(holder)}, lock "
                    f"{_show(self.path)}); wait for it to finish or choose another {self.option}"
                ) from None
            # The holder before us may have unlinked the file between our open and our flock: the lock
            # is ours only if the path still names the inode we locked.
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD_HERE[self.path] = 1

    def release(self) -> None:
        if self._nested:
            self._nested = False
            _HELD_HERE[self.path] -= 1
            return
        if self._fd is not None:
            del _HELD_HERE[self.path]
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still locked, so no one locks a file about to vanish
            os.close(self._fd)
            self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: the run wrote there, keep it
                directory.rmdir()
        self._created = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------------
# runaway values


class NonFiniteError(InputError):
    """Training produced a non-finite loss, gradient norm or weight; nothing non-finite is saved."""


def check_finite(
    step: int, loss: Any, grad_norm: Any = None, last_checkpoint: str | os.PathLike[str] | None = None
) -> None:
    """Raise NonFiniteError when `loss` or `grad_norm` (numbers or one-element tensors) is NaN or inf.

    Call it every optimisation step before `optimizer.step()` and before any save, so the last saved
    checkpoint stays the last good one; the message names the step and that checkpoint.
    """
    for name, value in (("loss", loss), ("gradient norm", grad_norm)):
        if value is None:
            continue
        number = float(value)
        if not math.isfinite(number):
            resume = (
                f"the last good checkpoint is {_show(last_checkpoint)}"
                if last_checkpoint is not None
                else "no checkpoint was saved"
            )
            raise NonFiniteError(
                f"step {step}: {name} is {number} (training diverged; lower the learning rate); "
                f"stopped without saving, {resume}"
            )


def check_finite_weights(named: Mapping[str, Any] | Any, what: str) -> None:
    """Refuse to save weights (a state dict or a module) with a NaN or inf, naming the first tensor."""
    import torch

    tensors = named.state_dict() if hasattr(named, "state_dict") else named
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            count = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteError(
                f"{what}: {count} non-finite values in {name}; not saved (training diverged)"
            )


# ------------------------------------------------------------------------------------------------------
# memory bounds


def available_memory(cuda: bool = False) -> tuple[int, str]:
    """Bytes a run may still allocate, and what they are: the GPU's total memory when `cuda` (tensors
    live there), else the system's MemAvailable (/proc/meminfo; elsewhere, the free physical pages)."""
    if cuda:
        import torch

        return torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "memory available"
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "memory available"


def check_memory(need: int, estimate: str, advice: str, cuda: bool = False) -> None:
    """Refuse a run whose rough `need` (bytes; `estimate` says how it was counted) exceeds the memory
    available, before any work: an impossible batch or buffer fails in a second with one line instead of
    allocating until the system kills the process. Estimates are lower bounds of what a step needs."""
    have, what = available_memory(cuda)
    if need > have:
        raise InputError(f"{estimate} = {_size(need)}, more than the {_size(have)} of {what}; {advice}")


def _size(count: int | float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------------
# weights files

SAFE_WEIGHTS = (".safetensors",)
PICKLED_WEIGHTS = (".bin", ".pt", ".pth")


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state dict from a safetensors file, or from a PyTorch pickle with `torch.load(weights_only=True)`.

    A pickle that needs anything beyond tensors and plain containers (code, custom classes) is refused
    with one line instead of being run; any other suffix is refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{_show(path)}: weights file not found")
    if path.suffix in SAFE_WEIGHTS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(f"{_show(path)}: not a readable safetensors file ({_first_line(err)})") from None
    if path.suffix in PICKLED_WEIGHTS:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError for forbidden globals, RuntimeError for damage
            raise InputError(
                f"{_show(path)}: refused: a pickle that is not plain tensors, or damaged "
                f"({type(err).__name__}); only safetensors or weights-only pickles are loaded"
            ) from None
        if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
            raise InputError(f"{_show(path)}: expected a mapping of names to tensors")
        return loaded
    raise InputError(
        f"{_show(path)}: unsupported weights file {path.suffix!r}: expected "
        + ", ".join(SAFE_WEIGHTS + PICKLED_WEIGHTS)
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return escape_terminal(text.splitlines()[0]) if text else type(err).__name__


# ------------------------------------------------------------------------------------------------------
# Hub names


def check_hub_name(name: str, option: str) -> None:
    """Refuse at once a Hub model name that cannot load: not in the local cache while the Hub is out of
    reach (`hub_unreachable`).

    Without this, transformers retries several times (a dozen lines, 30-80 s) before failing. A name in
    the cache passes; so does any name while the Hub answers (transformers reports a wrong name itself).
    """
    if _in_hub_cache(name):
        return
    reason = hub_unreachable()
    if reason is not None:
        raise InputError(
            f"{option} {_show(name)}: not a local directory and not in the Hugging Face cache, and {reason}; "
            "pass a local save_pretrained directory"
        )


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be used ("HF_HUB_OFFLINE is set", "huggingface.co cannot be reached (...)"),
    or None when one quick connection to its host (`HF_ENDPOINT`) succeeds. No retries."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or _env_true("HF_DATASETS_OFFLINE"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else _reason(err)
        return f"{host} cannot be reached ({reason})"


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Run a Hub-using call in offline mode (local cache only, no retries), whatever the environment
    said when huggingface_hub and datasets were imported."""
    import importlib

    patched = []
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, "HF_HUB_OFFLINE"):
            patched.append((module, module.HF_HUB_OFFLINE))
            module.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for module, value in patched:
            module.HF_HUB_OFFLINE = value


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id: not cached (transformers names the problem when loading)
        return False
    return isinstance(found, str)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def check_input_file(path: str | os.PathLike[str], what: str = "file") -> None:
    """Refuse, before opening it, a path that is not a readable regular file: missing, a broken or
    looping symbolic link, a directory, a FIFO or device (opening a FIFO would wait forever for a
    writer), or unreadable. The messages start with the path, e.g. "p.jsonl: file not found"."""
    shown = _show(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{shown}: broken symbolic link (to {_show(os.readlink(path))})") from None
        raise InputError(f"{shown}: {what} not found") from None
    except OSError as err:  # a symlink loop, a path through a file, a name too long
        raise InputError(f"{shown}: cannot open the {what} ({describe_os_error(err)})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{shown}: is a directory, expected a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise InputError(f"{shown}: is {kind}, expected a regular {what}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{shown}: cannot read the {what} (permission denied)")


@contextlib.contextmanager
def user_file_errors(path: str | os.PathLike[str], what: str = "file") -> Iterator[None]:
    """Turn OSError and UnicodeDecodeError raised while reading `path` into one InputError line."""
    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"{_show(path)}: not a UTF-8 text {what}") from None
    except OSError as err:
        raise InputError(f"{_show(path)}: cannot read the {what} ({describe_os_error(err)})") from None


def describe_os_error(err: OSError) -> str:
    """A short reason: 'permission denied', 'is a directory', 'too many levels of symbolic links'."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (err.strerror or type(err).__name__).lower()
