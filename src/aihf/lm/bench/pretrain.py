"""Pretrain the benchmark's base policy from scratch on the shipped corpus (the paper's GPT-2 stand-in).

A byte-level BPE tokenizer (`aihf.lm.tiny.train_tokenizer`) and a small GPT-2 (`aihf.lm.tiny.tiny_config`)
are fitted to `pretrain.txt.gz`: the cookies are joined by the eos token into one stream and cut into
fixed-length blocks, the usual causal-LM recipe. Dropout is used while pretraining and switched off
in the saved config, so later RL / preference training sees a deterministic policy in train mode.

Recreate the shipped model with `aihf lm pretrain --out src/aihf/data/lm/base_model` (defaults below).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from aihf.io import atomic_path, write_json
from aihf.lm.bench.corpus import CORPUS_DIR, load_pretrain_text

BASE_MODEL_DIR = CORPUS_DIR.parent / "base_model"


@dataclass
class PretrainConfig:
    vocab_size: int = 2048
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    block_size: int = 128
    batch_size: int = 16
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    dropout: float = 0.1
    valid_fraction: float = 0.02
    seed: int = 0


def _blocks(ids: list[int], block_size: int) -> torch.Tensor:
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


def pretrain(
    out_dir: str | Path, config: PretrainConfig | None = None, corpus_dir: Path = CORPUS_DIR
) -> dict:
    """Train tokenizer + model; write `out_dir` (save_pretrained, with tokenizer) and return the metrics."""
    from transformers import GPT2LMHeadModel

    from aihf.lm.tiny import tiny_config, train_tokenizer

    cfg = config or PretrainConfig()
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    texts = load_pretrain_text(corpus_dir)
    tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
    n_valid = max(1, int(cfg.valid_fraction * len(texts)))
    streams = []
    for part in (texts[n_valid:], texts[:n_valid]):
        ids: list[int] = []
        for row in tokenizer(part)["input_ids"]:
            ids.extend([*row, tokenizer.eos_token_id])
        streams.append(_blocks(ids, cfg.block_size))
    train, valid = streams
    model_config = tiny_config(
        tokenizer, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, n_positions=cfg.block_size
    )
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model_config, name, cfg.dropout)
    model = GPT2LMHeadModel(model_config)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
        ),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain", unit="step", mininterval=10)
    for step in bar:
        batch = train[torch.randint(len(train), (cfg.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        valid_loss = sum(model(input_ids=b, labels=b).loss.item() for b in valid.split(cfg.batch_size))
        valid_loss /= math.ceil(len(valid) / cfg.batch_size)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model.config, name, 0.0)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    metrics = {
        "parameters": n_params,
        "train_tokens": train.numel(),
        "final_train_loss": loss.item(),
        "valid_loss": valid_loss,
        "valid_perplexity": math.exp(valid_loss),
        "seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
        "config": asdict(cfg),
    }
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "pretrain_metrics.json", metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}))
    return metrics
