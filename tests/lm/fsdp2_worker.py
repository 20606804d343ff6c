"""Run by test_scale.py under torchrun (two CPU processes, gloo): the tiny policy sharded with FSDP2's
`fully_shard` (per layer and at the root, as accelerate shards it), then what the trainers do with a
sharded model: sample with unsharded parameters, copy the current weights, gather them for saving."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from aihf.lm import runtime
from aihf.lm.modeling import load_causal_lm, load_tokenizer


def main(policy_dir: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    plain = load_causal_lm(str(policy_dir)).eval()
    sharded = load_causal_lm(str(policy_dir)).eval()
    for layer in sharded.transformer.h:
        fully_shard(layer)
    fully_shard(sharded)
    tokenizer = load_tokenizer(str(policy_dir))
    prompt = tokenizer(["The film was"], return_tensors="pt")
    # each process decodes its own number of steps, greedily: with per-step all-gathers this would hang
    steps = 3 + 4 * rank
    with runtime.unsharded_for_generation(sharded) as model:
        full_inside = not any(isinstance(p, DTensor) for p in model.parameters())
        got = model.generate(**prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    want = plain.generate(**prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    resharded = all(isinstance(p, DTensor) for p in sharded.parameters())
    copy = runtime._unsharded(sharded, runtime.full_state_dict(sharded, everywhere=True))
    saved = runtime.full_state_dict(sharded)  # the main process's copy for saving, on CPU
    plain_weights = plain.state_dict()
    result = {
        "full_inside": full_inside,
        "resharded": resharded,
        "same_generation": torch.equal(got, want),
        "copy_class": type(copy).__name__,
        "copy_is_sharded": isinstance(copy, FSDPModule)
        or any(isinstance(p, DTensor) for p in copy.parameters()),
        "copy_equal": all(torch.equal(v, plain_weights[k]) for k, v in copy.state_dict().items()),
        "saved_keys": len(saved),
        "saved_equal": all(torch.equal(v, plain_weights[k]) for k, v in saved.items()),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
