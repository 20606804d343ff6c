"""The `aihf` command line: one subcommand per domain, plus `quickstart`.

Each domain module exposes `register(subparsers)`; it must import only argparse-level code so that
`aihf choice ...` never pays for importing transformers. Handlers raise `InputError` for bad input,
which becomes one line on stderr and exit code 2, and `RunFailed` for work that ran and failed (exit 1);
every error line starts with the subcommand's path (`aihf lm train: error: ...`), as argparse's do.
Before any handler runs, an `--out` that is one of the command's inputs (or holds an input model) is
refused, and the output is locked for the run's duration (`safety.RunLock`: a second command on the
same `--out` is refused with the holder's pid), except for the benchmark queues, which claim each job in
their store so that workers on several machines can share one `--out` (`aihf.experiments.store`).

This is the one place errors are printed: control characters from file names and data are escaped
there (`safety.escape_terminal`), so a message never splits into two lines or sends raw escape
sequences to the terminal. An OSError that names a file (permission denied, a directory or FIFO where
a file was expected, a full disk) is the user's file, not a bug, and is one line too.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from aihf import __version__
from aihf.errors import InputError, RunFailed
from aihf.io import check_output_path
from aihf.safety import RunLock, describe_os_error, escape_terminal, refuse_out_over_input

# Domain CLI modules, in the order they appear in `aihf --help`.
DOMAINS = ("aihf.choice.cli", "aihf.control.cli", "aihf.lm.cli", "aihf.quickstart")


# The namespace attribute that carries the chosen subcommand's path ("aihf lm train"), the prefix of
# every error line of the run (argparse's own, unknown arguments, and the handler's InputError).
COMMAND = "_aihf_command"


class _Parser(argparse.ArgumentParser):
    """argparse exits with code 2 on usage errors already; keep its message to one line, prefixed by
    the subcommand's path (also for unknown arguments, which argparse reports at the root)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {escape_terminal(message)}\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, COMMAND):  # the innermost subcommand parses first and wins
            setattr(namespace, COMMAND, self.prog)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(namespace, COMMAND)
            self.exit(2, f"{prog}: error: unrecognized arguments: {escape_terminal(' '.join(extras))}\n")
        return namespace


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aihf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"aihf {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module_name in DOMAINS:
        # Domain CLI modules import only argparse-level code, so every domain is listed even when its
        # optional extra is missing; running it then says which extra to install (see `main`).
        importlib.import_module(module_name).register(subparsers)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without a description its help line as one, so `aihf X --help` always
    says what X does (argparse shows a subparser's `help` only in its parent's list)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if sub.description is None and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = vars(args).pop(COMMAND, "aihf")
    args.command_line = ["aihf", *(sys.argv[1:] if argv is None else argv)]  # for model cards
    try:
        lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if getattr(args, "setup", None):  # a domain's process-wide settings (lm: no weight-loading bars)
            vars(args).pop("setup")()
        if getattr(args, "prepare", None):  # flags and --config resolved into args.out, args.model, ...
            args.prepare(args)
        if getattr(args, "out", None):
            option = getattr(args, "out_option", "--out")
            check_output_path(args.out, is_file=getattr(args, "out_is_file", False), option=option)
            refuse_out_over_input(
                args.out, _paths(args, MODEL_OPTIONS), _paths(args, FILE_OPTIONS), finished=(), option=option
            )
        target = getattr(args, "out", None) or getattr(args, "resume", None)  # control train --resume DIR
        rank0 = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"
        # a benchmark queue claims each job in its store instead, so several workers may share --out
        if target and rank0 and not getattr(args, "claims_jobs", False):
            lock = RunLock(target, "--out" if getattr(args, "out", None) else "--resume")
        with lock:
            result = args.handler(args)
    except InputError as err:
        _error(prog, str(err))
        return 2
    except RunFailed as err:
        _error(prog, str(err))
        return 1
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] == "aihf":
            raise  # a bug, not a missing extra
        extra = f"aihf[{args.command}]" if args.command in ("control", "lm") else "aihf[all]"
        package = err.name.split(".")[0]  # `transformers`, not the submodule that failed to import
        _error(prog, f"`aihf {args.command}` needs the package {package!r}: pip install '{extra}'")
        return 2
    except OSError as err:
        out = getattr(args, "out", None)
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and out:
            _error(prog, f"{err.filename or ''}{': ' if err.filename else ''}{_disk_full(err, out)}")
            return 2
        if err.filename is None:
            raise  # not about a file the user named: a bug
        _error(prog, f"{err.filename}: {describe_os_error(err)}")
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


# Options naming models (directories a run may write over: OUT/policy, OUT/reward_model) and files a
# command reads. An --out that is one of them, or holds one of the models, is refused. Locations a
# command also writes (--data-dir, --resume) are not listed.
MODEL_OPTIONS = ("model", "reward_model", "base_model", "policy", "reference")
FILE_OPTIONS = ("demos", "prefs", "prompts", "data", "config", "gguf")


def _paths(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, (str, os.PathLike)):
            found["--" + name.replace("_", "-")] = os.fspath(value)
    return found


def _disk_full(err: OSError, out: str) -> str:
    """What a full disk cost: the checkpoint a resume would start from (the write that failed left
    only temporary files, as every save is atomic)."""
    from aihf.checkpoints import newest_complete

    last = newest_complete(out)
    resume = f"the last complete checkpoint is {last}" if last else "no complete checkpoint was saved"
    return f"{describe_os_error(err)} (writing under --out {out}); {resume}"


def _error(prog: str, message: str) -> None:
    print(f"{prog}: error: {escape_terminal(message)}", file=sys.stderr)
