"""`aihf quickstart`: the main job. Runs each domain's headline quick experiment on data the project
ships or generates, and writes one Markdown report with their tables and plots.

A domain joins by providing `aihf.<domain>.quickstart.run(out_dir: Path, workers: int) -> str`,
returning its Markdown section (paths of plots relative to `out_dir`); `workers` is how many
single-threaded processes it may run side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from aihf import __version__
from aihf.errors import InputError
from aihf.io import write_text
from aihf.threads import idle_cores, limit_threads

HEARTBEAT_S = 25.0  # some steps (a SmolLM2 evaluation) run minutes without a progress bar moving

# (section title, module, what it needs installed)
SECTIONS = (
    ("Discrete choice: when joint learning beats the staged pipeline", "aihf.choice.quickstart", None),
    (
        "Control: AIHF, RLHF and BC against the oracle on Pendulum-v1",
        "aihf.control.quickstart",
        "aihf[control]",
    ),
    ("Language model: SmolLM2-135M-Instruct with LoRA", "aihf.lm.quickstart", "aihf[lm]"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="run the headline experiments on embedded data and write a Markdown report"
    )
    parser.add_argument("--out", default="aihf-quickstart", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--only", nargs="+", choices=[m.split(".")[1] for _, m, _ in SECTIONS], help="run only these domains"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="single-threaded processes a section may run side by side (default: the cores not busy "
        "when it starts, by the load average)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # one thread here and in every worker: the small networks gain nothing from more, and extra threads
    # on a shared machine (or beside the LM bench's parallel workers) slow every process down
    limit_threads(1)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: expected a positive count")
    workers = args.workers or idle_cores()  # measured once, before our own processes add to the load
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in SECTIONS if not args.only or s[1].split(".")[1] in args.only]
    parts = [
        f"# aihf quickstart report\n\naihf {__version__}. Each section below was produced by this run.\n"
    ]
    for title, module_name, extra in tqdm(chosen, desc="quickstart", unit="section"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue  # this domain has no quick run yet
            parts.append(f"## {title}\n\nSkipped: `{err.name}` is not installed (`pip install {extra}`).\n")
            continue
        start = time.perf_counter()
        with heartbeat(title):
            section = module.run(out_dir, workers)
        parts.append(f"## {title}\n\n{section.strip()}\n\n_Ran in {time.perf_counter() - start:.1f} s._\n")
    report = out_dir / "report.md"
    write_text(report, "\n".join(parts))
    print(f"report written to {report}")
    return 0


@contextlib.contextmanager
def heartbeat(title: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Print one line every `every` seconds while a section runs, so no step is a silent wait."""
    done = threading.Event()
    start = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            print(
                f"quickstart: {title}: running, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
