"""What every hand-written LM trainer shares: accelerator, PEFT, batches, metrics, checkpoints, outputs.

Checkpoints are `accelerate` states (models, optimisers, RNG of every process) plus the trainer's own
counters, data-sampler generators and learning-rate schedules as JSON + npz (`register_state`), under
`OUT/checkpoints/checkpoint-N`, sealed with a manifest and renamed into place only when complete,
verified before a resume (`aihf.checkpoints`). Every part must load on resume, or the resume stops.
Metrics go to `OUT/metrics.jsonl`, accelerate's trackers (`report_to`; TensorBoard under `OUT/runs`)
and the tqdm bar.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from aihf import checkpoints
from aihf.errors import InputError
from aihf.flags import canonical
from aihf.io import write_text
from aihf.lm.config import RENAMES, LMConfig
from aihf.lm.modeling import lora_config
from aihf.safety import NonFiniteError, check_finite_weights
from aihf.state import read_state, write_state


def trackers(config: LMConfig) -> list[str]:
    """`report_to` as accelerate tracker names; wandb runs offline unless WANDB_MODE says otherwise."""
    names = [config.report_to] if isinstance(config.report_to, str) else list(config.report_to)
    names = [n for n in names if n != "none"]
    if "wandb" in names or "all" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
    return names


def make_accelerator(config: LMConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    # A TRL stage earlier in this process (RLHF's reward model) leaves its own global state behind.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=config.use_cpu or _multi_process_without_gpu(),
        mixed_precision="bf16" if config.bf16 else "no",
        log_with=trackers(config) or None,
        project_dir=str(Path(config.output_dir) / "runs"),
    )
    set_seed(config.seed)
    accelerator.register_save_state_pre_hook(_save_trainable_weights(accelerator))
    accelerator.register_load_state_pre_hook(_load_trainable_weights)
    return accelerator


def _multi_process_without_gpu() -> bool:
    """Launched as several processes (torchrun's WORLD_SIZE) on a machine without a GPU.

    accelerate would then run each process as an independent single-process job (every one writing
    the same outputs, the saved policy torn); on CPU it has to be told, and then forms one DDP group
    over gloo."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


TRAINABLE_WEIGHTS = "trainable_weights_{}.pt"


def _save_trainable_weights(accelerator: Any) -> Any:
    """A save_state hook writing each model's trainable tensors only.

    With LoRA the frozen base is most of a model (14 GB of a 7B one) and never changes, so a checkpoint
    keeps the adapters and heads, as TRL's do. DeepSpeed and FSDP save their models themselves.
    """

    def hook(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        if len(weights) != len(models):
            return
        each_node = accelerator.project_configuration.save_on_each_node
        writes = accelerator.is_local_main_process if each_node else accelerator.is_main_process
        for i, (model, state) in enumerate(zip(models, weights) if writes else []):
            trainable = {name for name, param in model.named_parameters() if param.requires_grad}
            kept = {k: v for k, v in state.items() if k in trainable}
            torch.save(kept, Path(output_dir) / TRAINABLE_WEIGHTS.format(i))
        weights.clear()

    return hook


def _load_trainable_weights(models: list[Any], input_dir: str) -> None:
    """The load_state hook for `_save_trainable_weights`: every trainable tensor must be in the file."""
    if not (Path(input_dir) / TRAINABLE_WEIGHTS.format(0)).is_file():
        return  # a checkpoint of full state dicts, as accelerate writes them
    for i, model in enumerate(models):
        path = Path(input_dir) / TRAINABLE_WEIGHTS.format(i)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # damaged, or a pickle that is more than tensors
            raise checkpoints.CheckpointError(f"{path}: cannot be loaded ({type(err).__name__})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        absent = sorted(trainable & set(missing))
        if unexpected or absent:
            what = f"unexpected: {unexpected[0]}" if unexpected else f"missing: {absent[0]}"
            raise checkpoints.CheckpointError(f"{path}: does not fit model {i} ({what}, ...)")
    models.clear()


def prepare_model(model: Any, config: LMConfig, task_type: str) -> Any:
    """Gradient checkpointing, a LoRA adapter when `use_peft` (whose base is then pi_0), dropout off.

    Dropout is switched off after wrapping, so LoRA's own dropout goes too. The model is left in
    training mode: transformers checkpoints activations only there (with dropout off, training mode
    computes the same values as evaluation mode).
    """
    if config.gradient_checkpointing:  # renamed "activation checkpointing" in transformers 5
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if config.use_peft:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config, task_type))
    if config.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model.train()


def load_reference(policy: Any, config: LMConfig) -> Any:
    """pi_0, loaded again from where the policy was loaded (with the config's dtype and attention),
    as TRL's DPOTrainer does: under ZeRO-3 it is then built sharded like the policy, never a copy of
    a full model. A model built in memory has no source and is copied."""
    from aihf.lm.modeling import load_causal_lm, model_init_kwargs

    source = getattr(policy.config, "_name_or_path", "")
    if not source:
        return frozen_copy(policy)
    return load_causal_lm(source, model_init_kwargs(config)).requires_grad_(False).eval()


def frozen_copy(model: Any) -> Any:
    """A frozen evaluation-mode copy (the reference policy pi_0, or the SPIN opponent pi_t)."""
    import copy

    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def uses_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def uses_fsdp(accelerator: Any) -> bool:
    """FSDP (accelerate's `distributed_type: FSDP`); the trainers support its version 2 (`fully_shard`)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def current_copy(accelerator: Any, model: Any) -> Any:
    """A frozen copy of a trained model's current weights on every process (Self-Play's pi_t).

    Under FSDP the parameters are shards: the full state dict is gathered (a collective) into a fresh,
    unsharded instance of the model's class; otherwise the module is copied."""
    unwrapped = accelerator.unwrap_model(model)
    if not uses_fsdp(accelerator):
        return frozen_copy(unwrapped)
    return frozen_copy(_unsharded(unwrapped, full_state_dict(model, everywhere=True)))


def full_state_dict(model: Any, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """An FSDP2 model's full (unsharded) state dict, a collective; on the main process only (on CPU)
    unless `everywhere`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    return get_model_state_dict(model, options=options)


def _unsharded(sharded: Any, state_dict: dict[str, torch.Tensor]) -> Any:
    """A plain instance of `sharded`'s model class (built from its config) holding `state_dict`.

    `fully_shard` swaps a module's class for an `FSDP<Class>` subclass; the copy is of the original."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(sharded)
    while issubclass(cls, FSDPModule):
        cls = next(base for base in cls.__bases__ if base is not FSDPModule)
    first = next(iter(state_dict.values()))
    model = cls._from_config(sharded.config, dtype=first.dtype)
    model.load_state_dict(state_dict)
    return model.to(first.device)


def prepare_trainable(accelerator: Any, model: Any, optimizer: Any, batch_size: int) -> tuple[Any, Any]:
    """accelerator.prepare for one model + optimiser (DeepSpeed allows one model per prepare call)."""
    if uses_deepspeed(accelerator):  # no dataloader is prepared, so DeepSpeed needs the micro-batch size
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
    return accelerator.prepare(model, optimizer)


def prepare_frozen(accelerator: Any, model: Any, bf16: bool) -> Any:
    """A frozen model on the device (bf16 when training in bf16); sharded for inference under ZeRO-3."""
    model = model.requires_grad_(False).eval()
    if bf16:
        model = model.to(torch.bfloat16)
    if uses_deepspeed(accelerator):
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(model, accelerator)
    if uses_fsdp(accelerator):  # sharded as the trained models are (TRL's `fully_shard` of a frozen model)
        from trl.models.utils import prepare_fsdp

        return prepare_fsdp(model.to(accelerator.device), accelerator)
    return model.to(accelerator.device)


def generation_model(accelerator: Any, model: Any) -> Any:
    """Context manager yielding the bare module for `generate`: ZeRO-3 parameters gathered meanwhile
    (TRL's unwrap), FSDP2 ones unsharded meanwhile (`unsharded_for_generation`)."""
    if uses_fsdp(accelerator):
        return unsharded_for_generation(accelerator.unwrap_model(model))
    from trl.models.utils import unwrap_model_for_generation

    return unwrap_model_for_generation(model, accelerator)


@contextlib.contextmanager
def unsharded_for_generation(model: Any) -> Iterator[Any]:
    """FSDP2's counterpart of FSDP1's `summon_full_params` for sampling: every `fully_shard`ed module
    all-gathers its parameters once and keeps them until the end, so `generate`'s decoding steps run
    without collectives (each process may then stop after its own number of steps); sharded again after.
    """
    from torch.distributed.fsdp import FSDPModule

    shards = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in shards:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield model
    finally:
        for module in shards:
            module.reshard()
            module.set_reshard_after_forward(True, recurse=False)


def check_accumulation(accelerator: Any, config: LMConfig) -> None:
    """What the distributed setup cannot do with this config, refused before any model is prepared."""
    if config.gradient_accumulation_steps > 1 and uses_deepspeed(accelerator):
        raise InputError(
            "gradient_accumulation_steps > 1 with DeepSpeed: set gradient_accumulation_steps in the "
            "DeepSpeed config instead and keep it 1 here"
        )
    if uses_fsdp(accelerator):
        version = accelerator.state.fsdp_plugin.fsdp_version
        if version != 2:
            raise InputError(
                f"fsdp_version {version}: the aihf trainers run FSDP2 (fsdp_version: 2, as in "
                "configs/accelerate/fsdp2.yaml)"
            )
        if config.use_peft:
            raise InputError(
                "use_peft with FSDP: saving merged LoRA weights of a sharded model is not supported; "
                "use DDP or DeepSpeed (configs/accelerate/) for LoRA runs"
            )


def backward(accelerator: Any, model: Any, loss: torch.Tensor, sync: bool = True) -> None:
    """Backward of one micro-batch; `sync=False` skips DDP's gradient all-reduce (not the last one)."""
    if uses_deepspeed(accelerator):
        model.backward(loss)
        return
    if sync or accelerator.num_processes == 1:
        accelerator.backward(loss)
    else:
        with accelerator.no_sync(model):
            accelerator.backward(loss)


def optimizer_step(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, max_grad_norm: float
) -> None:
    """Clip, step, zero_grad, schedule: once per optimiser step, after its micro-batches' backward.

    A non-finite gradient norm stops training before the step (`NonFiniteError`; the loop adds the step
    and the last good checkpoint), so no NaN reaches the weights. The norm is computed after DDP's
    all-reduce, so every process stops at the same step. Under DeepSpeed each model is its own engine
    (clipping from its config); accelerate's `backward` would always drive the last engine prepared, so
    each engine is driven directly.
    """
    if uses_deepspeed(accelerator):
        model.step()
    else:
        norm = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf")))
        if not math.isfinite(norm):
            raise NonFiniteError(f"gradient norm is {norm} (training diverged; lower the learning rate)")
        optimizer.step()
        optimizer.zero_grad()
    scheduler.step()


def make_optimizer(model: Any, lr: float, config: LMConfig) -> torch.optim.Optimizer:
    """torch AdamW with weight decay off biases and norms: the optimiser transformers' Trainer builds."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )


def make_scheduler(accelerator: Any, optimizer: Any, config: LMConfig, total_steps: int) -> Any:
    """transformers' learning-rate schedule over this model's optimiser steps; part of the checkpoint.

    Stepped by hand once per optimiser step (accelerate's wrapper would step it once per process).
    """
    from transformers import get_scheduler

    scheduler = get_scheduler(
        config.lr_scheduler_type,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=total_steps,
    )
    register_state(accelerator, scheduler)
    return scheduler


class BatchSampler:
    """Endless shuffled mini-batches of row indices; each process takes its slice of a global batch.

    Every process draws the same permutation (same seed), so data parallelism splits one global batch
    of `batch_size * num_processes` rows. Its generator state is part of the checkpoint.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        need = self.batch_size * self.world
        while len(self.order) < need:
            self.order += torch.randperm(self.size, generator=self.generator).tolist()
        batch, self.order = self.order[:need], self.order[need:]
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])


class TrainerState:
    """Counters and samplers saved with each checkpoint (`register_state`)."""

    def __init__(self, samplers: dict[str, BatchSampler]) -> None:
        self.step = 0
        self.samplers = samplers
        self.extra: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "samplers": {k: s.state_dict() for k, s in self.samplers.items()},
            "extra": self.extra,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.extra = state.get("extra", {})
        for key, sampler in self.samplers.items():
            sampler.load_state_dict(state["samplers"][key])


class MetricsLogger:
    """TRL-style metric names to OUT/metrics.jsonl (one JSON object per logged step) and the trackers."""

    def __init__(self, accelerator: Any, out_dir: Path, project: str, config: LMConfig) -> None:
        self.accelerator = accelerator
        self.enabled = accelerator.is_main_process
        self.path = out_dir / "metrics.jsonl"
        if self.enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.tracking = bool(trackers(config))
        if self.tracking:  # hyper-parameters as scalars/strings, which every tracker accepts
            flat = {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in config.to_dict().items()
            }
            accelerator.init_trackers(project)
            for tracker in accelerator.trackers if self.enabled else []:
                if tracker.name == "tensorboard":
                    _tensorboard_hparams(tracker.writer, flat)
                else:
                    tracker.store_init_configuration(flat)
        self.last: dict[str, float] = {}

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self.last = {"step": step, **clean}
        if self.tracking:
            self.accelerator.log({k: v for k, v in clean.items() if math.isfinite(v)}, step=step)
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(self.last) + "\n")

    def drop_after(self, step: int) -> None:
        if self.enabled:
            trim_metrics(self.path, step)

    def close(self) -> None:
        if self.tracking:
            self.accelerator.end_training()


def _tensorboard_hparams(writer: Any, values: dict[str, Any]) -> None:
    """The run's hyper-parameters into its own event file. accelerate's TensorBoard tracker calls
    `add_hparams`, which writes them into a new timestamped run directory and puts an hparams.yml
    into a second one: two extra runs in TensorBoard's list for every training run."""
    summary = importlib.import_module(type(writer).__module__.rsplit(".", 1)[0] + ".summary")
    for event in summary.hparams(values, {}):  # torch's or tensorboardX's, whichever wrote the run
        writer._get_file_writer().add_summary(event)
    writer.flush()


def trim_metrics(path: Path, step: int) -> None:
    """Keep the log records up to `step` (a resumed run's checkpoint); a torn last line is dropped."""
    if path.exists():
        kept = [r for r in checkpoints.read_log(path) if r.get("step", 0) <= step]
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def mean_metrics(records: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in records for k in r}
    return {k: sum(r[k] for r in records if k in r) / sum(1 for r in records if k in r) for k in sorted(keys)}


def gather_mean(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over processes so the log describes the global batch."""
    if accelerator.num_processes == 1 or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], device=accelerator.device, dtype=torch.float32)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


# --- checkpoints -------------------------------------------------------------------------------------


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def resolve_resume(out_dir: Path, resume: str | bool | None) -> Path | None:
    """The checkpoint to resume from, verified against its manifest (`aihf.checkpoints`).

    A damaged or incomplete checkpoint is refused with one line naming the file, never skipped
    silently; the message names the newest complete checkpoint before it, if any.
    """
    if not resume:
        return None
    if resume is True or resume == "latest":
        found = checkpoint_dirs(out_dir)
        if not found:
            raise InputError(f"{out_dir}/checkpoints: resume_from_checkpoint=True but there is no checkpoint")
        path = found[-1]
    else:
        path = Path(str(resume))
        if not path.is_dir():
            raise InputError(f"{path}: resume_from_checkpoint names no checkpoint directory")
    try:
        checkpoints.verify(path)
    except checkpoints.CheckpointError as err:
        earlier = [p for p in checkpoint_dirs(path.parent.parent) if p != path and checkpoints.is_complete(p)]
        hint = f"; the newest complete one is {earlier[-1]}" if earlier else ""
        raise checkpoints.CheckpointError(f"{err}; not resuming{hint}") from None
    old = sorted(p.name for p in path.glob(_PICKLED_STATE))
    if old:
        raise checkpoints.CheckpointError(
            f"{path / old[0]}: pickled trainer state of an older aihf; not loaded, since unpickling "
            "can run code: start the run again"
        )
    _check_small_parts(path)
    return path


def _check_small_parts(checkpoint: Path) -> None:
    """Load the RNG states (accelerate's and TRL's) and the trainer state before any model loads: a
    damaged one is one line now, not after the models' loading bars (accelerate alone would skip a bad
    RNG state silently). All load weights-only, running no code."""
    from accelerate.utils import load as weights_only_load

    for part in sorted([*checkpoint.glob("random_states_*.pkl"), *checkpoint.glob("rng_state*.pth")]):
        try:
            weights_only_load(part)
        except Exception as err:
            raise checkpoints.CheckpointError(
                f"{part}: cannot be loaded ({type(err).__name__}); not resuming (a resume without it "
                "would not be exact)"
            ) from None
    if (checkpoint / f"{STATE_FILE}.json").exists():
        read_state(checkpoint, STATE_FILE)


RUN_FILE = "run.json"  # in every checkpoint: the method and config that wrote it
# Settings a resumed run may change: its length (a cut run goes on to a longer budget; a decaying
# learning-rate schedule then follows the new length), where, how often and what it reports
# (evaluation during training included), and where vLLM runs.
RESUME_MAY_CHANGE = frozenset(
    {
        "max_steps",
        "max_iterations",
        "output_dir",
        "resume_from_checkpoint",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "report_to",
        "eval_strategy",
        "eval_steps",
        "eval_gold",
        "eval_num_prompts",
        "eval_max_new_tokens",
        "dataset_num_proc",
        # where vLLM runs and how much memory it takes (a requeued job may get another server node)
        "vllm_server_base_url",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_server_timeout",
        "vllm_group_port",
        "vllm_gpu_memory_utilization",
        "vllm_enable_sleep_mode",
    }
)


def start_or_resume(
    accelerator: Any,
    out_dir: Path,
    resume: str | bool | None,
    state: Any,
    logger: Any,
    total: int,
    desc: str,
    run: dict[str, Any] | None = None,
) -> Any:
    """Load the checkpoint a run resumes from, if any, and return the run's progress bar.

    `run` ({"method", "config"}) must match what the checkpoint's run wrote (`check_resume`), so a
    resume is never silently another method or other settings. Log records that an interrupted run
    wrote after its last checkpoint are dropped, so the resumed run's `metrics.jsonl` reads as one
    uninterrupted run.
    """
    checkpoint = resolve_resume(out_dir, resume)
    if checkpoint is not None:
        if run is not None and (checkpoint / RUN_FILE).is_file():
            check_resume(checkpoint, json.loads((checkpoint / RUN_FILE).read_text()), run)
        load_checkpoint(accelerator, checkpoint)
        logger.drop_after(state.step)
    return progress(total, state.step, accelerator.is_local_main_process, desc)


def check_resume(checkpoint: Path, saved: dict[str, Any], run: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint of another method, or with settings that change what is computed."""
    if saved.get("method") != run["method"]:
        raise InputError(
            f"{checkpoint}: a checkpoint of {saved.get('method')!r}, not of {run['method']!r}; resume it "
            f"with --trainer {saved.get('method')}, or start {run['method']} in a new --out"
        )
    old = canonical(saved.get("config", {}), RENAMES, str(checkpoint), warn=False)  # written before a rename
    new = json.loads(json.dumps(run["config"]))
    changed = sorted(
        k for k in old.keys() | new.keys() if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k)
    )
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise InputError(
            f"{checkpoint}: resuming with settings that differ from the checkpoint's ({shown}{more}); "
            "resume with the same settings, or start a new --out"
        )


# The trainer's own state in every checkpoint (aihf_state.json + .npz): counters, data samplers and
# learning-rate schedules. Not accelerate's `register_for_checkpointing`, whose custom_checkpoint_N.pkl
# accelerate loads with `torch.load(weights_only=False)`, so a crafted checkpoint would run code; the
# rest of accelerate's state (optimizer.bin, scheduler.bin, random_states_N.pkl) loads weights-only.
STATE_FILE = "aihf_state"  # not trainer_state: transformers writes that name into TRL checkpoints
_STATEFUL: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_PICKLED_STATE = "custom_checkpoint_*.pkl"  # what older checkpoints held instead


def register_state(accelerator: Any, obj: Any) -> None:
    """Save `obj.state_dict()` with every checkpoint of `accelerator`'s run, and restore it on resume."""
    _STATEFUL.setdefault(accelerator, []).append(obj)


def load_checkpoint(accelerator: Any, checkpoint: Path) -> None:
    """accelerator.load_state, then the trainer's own state; any part that fails to load stops the
    resume with one line naming its file (accelerate only logs an unloadable RNG state and goes on,
    which would make the resume silently inexact)."""
    with _naming_unloadable_files(checkpoint) as failed:
        accelerator.load_state(str(checkpoint))
    if failed:  # swallowed by accelerate (the RNG states)
        raise failed[0]
    objects = _STATEFUL.get(accelerator, [])
    states = read_state(checkpoint, STATE_FILE)
    path = checkpoint / f"{STATE_FILE}.json"
    if not isinstance(states, list) or len(states) != len(objects):
        raise checkpoints.CheckpointError(f"{path}: does not fit this run's trainer state; not resuming")
    for obj, saved in zip(objects, states, strict=True):
        try:
            obj.load_state_dict(saved)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise checkpoints.CheckpointError(
                f"{path}: does not fit this run's trainer state ({type(err).__name__}: {err}); not resuming"
            ) from None


@contextlib.contextmanager
def _naming_unloadable_files(checkpoint: Path) -> Iterator[list[checkpoints.CheckpointError]]:
    """While accelerate loads `checkpoint`, a file its `load` cannot read raises (and is recorded as) a
    CheckpointError naming that file."""
    import accelerate.checkpointing as acc_checkpointing

    failed: list[checkpoints.CheckpointError] = []
    real_load = acc_checkpointing.load

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_load(f, *args, **kwargs)
        except Exception as err:
            failed.append(
                checkpoints.CheckpointError(
                    f"{f}: cannot be loaded ({type(err).__name__}); not resuming (a resume without it "
                    "would not be exact)"
                )
            )
            raise failed[-1] from None

    acc_checkpointing.load = load
    try:
        yield failed
    except checkpoints.CheckpointError:
        raise
    except Exception as err:  # a file that loaded but does not fit (e.g. another optimiser's state)
        reason = (str(err).strip().splitlines() or [""])[0]
        raise checkpoints.CheckpointError(
            f"{checkpoint}: cannot be resumed ({type(err).__name__}: {reason}); not resuming"
        ) from None
    finally:
        acc_checkpointing.load = real_load


def save_checkpoint(
    accelerator: Any, out_dir: Path, step: int, keep: int, run: dict[str, Any] | None = None
) -> Path:
    """accelerator.save_state into a temporary directory, renamed to checkpoint-N when complete; `run`
    (method and config) is written beside it for `check_resume`."""
    final = out_dir / "checkpoints" / f"checkpoint-{step}"
    tmp = out_dir / "checkpoints" / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_state(tmp, STATE_FILE, [obj.state_dict() for obj in _STATEFUL.get(accelerator, [])])
        if run is not None:
            write_text(tmp / RUN_FILE, json.dumps(run, indent=2) + "\n")
        checkpoints.write_manifest(tmp)  # last: a checkpoint without one is incomplete
        checkpoints.remove_dir(final)
        os.replace(tmp, final)
        checkpoints.prune(checkpoint_dirs(out_dir)[:-keep] if keep > 0 else [])
        checkpoints.remove_leftovers(final.parent)
    accelerator.wait_for_everyone()
    return final


# --- outputs -----------------------------------------------------------------------------------------


def snapshot_dir(out_dir: Path, step: int) -> Path:
    """Where a run keeps its policy at `step` units (`snapshot_steps`)."""
    return Path(out_dir) / "snapshots" / f"step-{step}"


def snapshot_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete policy snapshot of a run, in step order."""
    found = Path(out_dir).glob("snapshots/step-*/config.json")
    return sorted((int(p.parent.name.split("-")[1]), p.parent) for p in found)


LIBRARIES = ("aihf", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub")


def model_card(
    method: str,
    sources: dict[str, str | None],
    data: Sequence[Any],
    config: dict[str, Any],
    metrics: dict[str, float] | None = None,
    adapter: bool = False,
) -> str:
    """The README.md of a saved model (huggingface_hub's `ModelCard`, as TRL's `create_model_card`):
    method, base model, data with row counts, the aihf command, final metrics, config, library versions.

    `sources` are the run's inputs as given (`model`, and `command` when run from the command line);
    `data` the `TextData` sets it trained on; `adapter` says the folder is a PEFT adapter."""
    from importlib.metadata import PackageNotFoundError, version

    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    base = sources.get("model") or "?"
    on_hub = base != "?" and not Path(base).exists()  # a local path is not a Hub id (TRL does the same)
    card_data = ModelCardData(
        base_model=base if on_hub else None,
        library_name="peft" if adapter else "transformers",
        tags=["aihf", method, "trl", *(["lora"] if adapter else [])],
    )
    sets = [d for d in data if d is not None]
    data_lines = "\n".join(f"- {d.kind}: `{d.source}` ({len(d.rows)} rows)" for d in sets) or "- (none)"
    notes = [n for d in sets for n in d.notes]
    command = sources.get("command")
    loading = (
        "a LoRA adapter over the base model: `PeftModel.from_pretrained(base, this_folder)` or "
        "`AutoPeftModelForCausalLM.from_pretrained(this_folder)`; `aihf lm generate --policy this_folder`"
        if adapter
        else "full weights: `AutoModelForCausalLM.from_pretrained(this_folder)`"
    )
    shown = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    metric_lines = "\n".join(f"| {k} | {v:.6g} |" for k, v in shown.items())
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"- {name}: {version(name)}")
        except PackageNotFoundError:
            continue
    body = (
        f"# {method} model trained with aihf\n\n"
        f"Method: **{method}** (aihf.lm; Alignment with Integrated Human Feedback, arXiv 2406.06874).\n"
        f"Base model: `{base}`. Saved as {loading}.\n\n"
        f"## Data\n\n{data_lines}\n\n"
        + ("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" if notes else "")
        + "## Command\n\n"
        + (f"```\n{command}\n```\n\n" if command else "Trained through the Python API (`run_training`).\n\n")
        + (f"## Metrics\n\n| metric | value |\n|---|---|\n{metric_lines}\n\n" if metric_lines else "")
        + f"## Configuration\n\n```yaml\n{yaml.safe_dump(config, sort_keys=True)}```\n\n"
        + "## Framework versions\n\n"
        + "\n".join(versions)
        + "\n"
    )
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))


def save_model(
    accelerator: Any, model: Any, tokenizer: Any, path: Path, card: str, merge: bool = True
) -> None:
    """save_pretrained + card. A PEFT model is saved merged into its base (`merge`: a plain model that
    `Auto*.from_pretrained` loads), or as its adapter alone (adapter_config.json and
    adapter_model.safetensors, which name the base)."""
    from aihf.io import atomic_path

    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # collective: gathers ZeRO-3 / FSDP shards
    if accelerator.is_main_process:
        check_finite_weights(state_dict, str(path))  # never a non-finite model as a result
        unwrapped = accelerator.unwrap_model(model)
        if uses_fsdp(accelerator):  # its modules hold shards: save a plain model built from the full weights
            unwrapped, state_dict = _unsharded(unwrapped, state_dict), None
        elif merge and hasattr(unwrapped, "merge_and_unload"):
            import copy

            unwrapped = copy.deepcopy(unwrapped)
            unwrapped.load_state_dict(state_dict)
            unwrapped, state_dict = unwrapped.merge_and_unload(), None
        with atomic_path(path) as tmp:
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            write_text(tmp / "README.md", card)
    accelerator.wait_for_everyone()


def save_policy(
    accelerator: Any, model: Any, tokenizer: Any, path: Path, config: LMConfig, card: Any
) -> None:
    """A run's final policy: with `use_peft` its LoRA adapter (and, with `save_merged`, the merged full
    weights in PATH_merged), else full weights. `card(adapter)` writes the model card of either form."""
    save_model(accelerator, model, tokenizer, path, card(config.use_peft), merge=not config.use_peft)
    if config.use_peft and config.save_merged:
        save_model(accelerator, model, tokenizer, merged_dir(path), card(False))


def merged_dir(path: Path) -> Path:
    """Where `save_merged` puts the full weights of the adapter saved in `path`."""
    return path.with_name(f"{path.name}_merged")


def push_to_hub(folder: Path, repo_id: str, method: str) -> str:
    """Upload a saved model folder to the Hub repository `repo_id` (created if missing); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=f"aihf lm train: {method}"
        )
    except Exception as err:  # offline, no token, no rights: the model stays saved locally
        raise InputError(
            f"push_to_hub: uploading {folder} to {repo_id} failed ({type(err).__name__}: {err}); "
            "the model is saved locally"
        ) from None
    return str(getattr(commit, "commit_url", None) or repo_id)


def progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)
