import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(tiny_dir, data_dir, out, iterations: int, resume: bool = False) -> list[dict]:
    """AIHF with LoRA under DDP over gloo on CPU, two processes; each one's fingerprints.

    accelerate 1.x runs `--cpu` jobs with its single-process launcher (multi-CPU needs MPI), so two
    CPU processes are started with its torchrun launcher (`--multi_gpu`) and no visible GPU; the
    trainer's `use_cpu=True` makes accelerate pick gloo.
    """
    worker = Path(__file__).with_name("ddp_worker.py")
    src = Path(__file__).resolve().parents[2] / "src"
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port())]
    command += [str(worker), str(tiny_dir), str(data_dir), str(out), str(iterations)]
    command += ["resume" if resume else "fresh"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow  # six two-process launches (72 s); the DDP launch below stays in the default suite
def test_aihf_under_accelerate_launch_two_processes_agree_and_resume(tiny_dir, data_dir, tmp_path):
    """Both processes end with identical policy and reward weights; a run cut after iteration 2 and
    resumed from its checkpoint (each model's trainable tensors, written once) ends where an
    uninterrupted one ends."""
    straight = _launch(tiny_dir, data_dir, tmp_path / "straight", 3)
    assert all(r["world"] == 2 for r in straight)
    assert straight[0]["policy"] == straight[1]["policy"] != straight[0]["initial"]
    assert straight[0]["reward"] == straight[1]["reward"]
    assert len((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()) == 3  # main process logs
    _launch(tiny_dir, data_dir, tmp_path / "cut", 2)
    checkpoint = tmp_path / "cut" / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("trainable_weights_*")) == [
        "trainable_weights_0.pt",
        "trainable_weights_1.pt",
    ]
    resumed = _launch(tiny_dir, data_dir, tmp_path / "cut", 3, resume=True)
    assert [(r["policy"], r["reward"]) for r in resumed] == [(r["policy"], r["reward"]) for r in straight]


def test_shipped_ddp_config_on_a_machine_without_gpu_trains_one_run(tiny_dir, data_dir, tmp_path):
    """README's `accelerate launch --config_file configs/accelerate/ddp.yaml -m aihf lm train ...`, two
    processes, a trainer config without `use_cpu: true`, no GPU: one DDP run (one complete policy, one metrics
    log), not two independent copies racing over the same output directory."""
    root = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    (tmp_path / "c.yaml").write_text(
        "per_device_train_batch_size: 3\nlearning_rate: 0.001\nreport_to: none\n"
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(root / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2"]
    command += ["--main_process_port", str(_free_port()), "--mixed_precision", "no"]
    command += ["-m", "aihf", "lm", "train", "--trainer", "direct-aihf"]
    command += ["--model_name_or_path", str(tiny_dir / "policy")]
    command += ["--demos", str(data_dir / "demos.jsonl"), "--prefs", str(data_dir / "prefs.jsonl")]
    command += ["--config", str(tmp_path / "c.yaml"), "--max-steps", "2", "--output_dir", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "policy" / "model.safetensors").is_file() and (out / "policy" / "config.json").is_file()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
