import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_aihf_under_accelerate_launch_two_processes_agree(tiny_dir, data_dir, tmp_path):
    """DDP over gloo on CPU: both processes must end with identical policy and reward weights.

    accelerate 1.x runs `--cpu` jobs with its single-process launcher (multi-CPU needs MPI), so two
    CPU processes are started with its torchrun launcher (`--multi_gpu`) and no visible GPU; the
    trainer's `cpu=True` makes accelerate pick gloo.
    """
    out = tmp_path / "ddp"
    worker = Path(__file__).with_name("ddp_worker.py")
    src = Path(__file__).resolve().parents[2] / "src"
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port())]
    command += [str(worker), str(tiny_dir), str(data_dir), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["policy"] == ranks[1]["policy"] != ranks[0]["initial"]
    assert ranks[0]["reward"] == ranks[1]["reward"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # logged once, by the main process
