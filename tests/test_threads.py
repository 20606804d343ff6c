import os
import subprocess
import sys

from aihf.threads import THREAD_ENV, limit_threads, share


def test_share_gives_each_worker_at_least_one_thread(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert share(2) == 2 and share(3) == 1 and share(8) == 1 and share(0) == 4


def test_limit_threads_sets_children_env_keeps_the_users_and_sets_xla_before_jax():
    """In a fresh interpreter (no jax, no torch yet): the env its children inherit, and torch's count."""
    code = (
        "import os, sys; from aihf.threads import limit_threads; n = limit_threads(1); import torch; "
        "print(n, os.environ['MKL_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'], "
        "'multi_thread_eigen=false' in os.environ['XLA_FLAGS'], torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_ENV, "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1", "True", "1"]
    env["OMP_NUM_THREADS"] = "2"  # the user's choice wins, and no single-thread XLA flags are added
    code = code.replace("os.environ['XLA_FLAGS']", "os.environ.get('XLA_FLAGS', '')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "2", "False", "2"]


def test_limit_threads_sets_a_loaded_torch():
    import torch

    before = torch.get_num_threads()
    try:
        assert limit_threads(1) >= 1
        assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    finally:
        torch.set_num_threads(before)


def test_parallel_control_processes_take_their_share_of_the_cores(tmp_path, monkeypatch):
    """`control bench --shard I/N` (N processes side by side) and `control protocol work` (one worker
    per core) set their thread counts before any work; a single bench keeps the machine's default."""
    import aihf.control.bench
    import aihf.control.protocol
    import aihf.threads
    from aihf.cli import main

    asked = []
    monkeypatch.setattr(aihf.threads, "limit_threads", asked.append)
    monkeypatch.setattr(aihf.threads, "share", lambda workers: 10 + workers)
    monkeypatch.setattr(aihf.control.bench, "run_bench", lambda *args, **kwargs: "")
    monkeypatch.setattr(aihf.control.protocol.ProtocolQueue, "work", lambda self, **kwargs: [])
    assert main(["control", "bench", "--shard", "1/3", "--out", str(tmp_path / "b")]) == 0
    assert main(["control", "bench", "--out", str(tmp_path / "c")]) == 0
    assert main(["control", "protocol", "work", "--runs", str(tmp_path / "p")]) == 0
    assert asked == [13, 1]
