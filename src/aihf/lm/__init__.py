"""aihf.lm: AIHF, Direct AIHF and Self-Play AIHF for Hugging Face causal LMs, with their baselines.

Methods (`aihf lm train --trainer NAME`, or `aihf.lm.train.run_training(NAME, ...)`); the one registry
is `aihf.lm.methods.METHODS` (config class, data, outputs, runner of each):

    aihf            AIHFTrainer (aihf_trainer.py): Algorithm 1. RL policy steps (RLOO, or online DPO on
                    the best/worst of k samples) toward the reward being learned, alternating with reward
                    steps on alpha * (demonstrations vs fresh policy samples) + Bradley-Terry on preferences.
    rlhf            SFT (optional, TRL) -> BTL reward model (TRL RewardTrainer) -> the same policy step with
                    the reward frozen; each stage in its own directory. A Python `reward_fn(prompts,
                    completions)` can replace the model.
    direct-aihf     DirectAIHFTrainer (direct.py): DPO on P + alpha * SFT on D; alpha = 0 is TRL's DPO.
    self-play-aihf  SelfPlayAIHFTrainer (direct.py): SPIN on D against the current iterate + DPO on P.
    spin            the same without P.
    sft, reward, dpo, ipo, rpo, orpo   TRL's SFTTrainer, RewardTrainer, DPOTrainer (DPO, IPO, and RPO =
                    DPO + alpha * SFT on the chosen answers) and ORPOTrainer (baselines.py).

The three hand-written trainers share one loop, `loop.LoopTrainer` (accelerate: gradient accumulation,
checkpointing, mixed precision, DDP/DeepSpeed, trackers, resume). It is not transformers' `Trainer`:
AIHF updates two models with two optimisers and schedules and samples from the policy inside its step,
and Self-Play AIHF regenerates its opponent's answers every iteration; `Trainer` holds one model and one
optimiser, and TRL's own on-policy trainers override most of it to sample. The TRL baselines read the
same config fields with the same meaning (`baselines.trl_args`).

Data (data.py) is TRL's column layout, from JSONL, Parquet, dataset directories or the Hub
(`name:split[slice]`), validated before training. Outputs: OUT/policy, OUT/reward_model (methods that
learn one), OUT/metrics.jsonl, OUT/runs (TensorBoard), OUT/checkpoints. YAML configs for the paper's
runs are in configs/lm; accelerate configs (DDP, DeepSpeed ZeRO-2/3) in configs/accelerate.

Where this package departs from METHOD.md, on purpose:
- The SFT term of Direct AIHF is `aihf.losses.sft_loss`, the token-mean negative log-likelihood
  (TRL's convention), where METHOD.md writes the sequence log-likelihood; the per-token scale is
  absorbed in alpha.
- Self-Play AIHF uses the current iterate pi_t as the reference of its DPO term on P as well
  (iterative DPO), so one frozen copy serves both terms.
- The default demonstration term is the logistic form (the authors' scripts); `demo_form: linear`
  is the paper's definition.
"""
