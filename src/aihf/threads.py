"""Thread counts for processes that run beside other workers.

PyTorch, OpenMP/MKL/OpenBLAS and XLA each start one thread per core by default. Two workers on two
cores then run four or more busy threads and each runs at half speed or worse (a Direct AIHF step on
SmolLM2 took 33 s with default threads vs 17.8 s with one, same machine and load). `limit_threads`
gives each worker its share of the cores; a count the user set in the environment is kept.
"""

from __future__ import annotations

import contextlib
import os
import sys

# Libraries that read their thread count from the environment when they load (children inherit it).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
XLA_SINGLE = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def idle_cores() -> int:
    """Cores not already busy (the one-minute load average subtracted), at least one: the number of
    single-threaded workers that speed a job up. On a core another job holds, a second worker only
    takes turns with the first (Linux's autogroup scheduling gives each session's processes one fair
    share together)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(os.getloadavg()[0]))


def share(workers: int) -> int:
    """Threads per worker when `workers` processes share this machine's cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def limit_threads(threads: int) -> int:
    """Use `threads` threads in this process and the processes it starts; returns the count in effect.

    Sets the OpenMP/MKL/OpenBLAS variables unless already set (the user's choice wins), adds XLA's
    single-thread flags when one thread is asked for and JAX is not imported yet (XLA reads them once),
    and sets torch's intra-op (and, if still possible, inter-op) threads when torch is loaded.
    """
    given = os.environ.get("OMP_NUM_THREADS", "")
    threads = max(1, int(given) if given.isdigit() else threads)
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "jax" not in sys.modules and "multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_SINGLE}".strip()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # torch allows it once, before any parallel work
            torch.set_num_interop_threads(threads)
    return threads
