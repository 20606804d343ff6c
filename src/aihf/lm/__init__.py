"""aihf.lm: AIHF, Direct AIHF and Self-Play AIHF for Hugging Face causal LMs, with their baselines.

Trainers (`aihf lm train --trainer NAME`, or `aihf.lm.train.run_training(NAME, ...)`):

    aihf            AIHFTrainer (aihf_trainer.py): Algorithm 1. RL policy steps (RLOO, or online DPO on
                    the best/worst of k samples) toward the reward being learned, alternating with reward
                    steps on alpha * (demonstrations vs fresh policy samples) + Bradley-Terry on preferences.
    rlhf            SFT (optional, TRL) -> BTL reward model (TRL RewardTrainer) -> the same policy step with
                    the reward frozen. A Python `reward_fn(prompts, completions)` can replace the model.
    direct-aihf     DirectAIHFTrainer (direct.py): DPO on P + alpha * SFT on D; alpha = 0 is TRL's DPO.
    self-play-aihf  SelfPlayAIHFTrainer (direct.py): SPIN on D against the current iterate + DPO on P.
    spin            the same without P.
    sft, reward, dpo, ipo   TRL's SFTTrainer, RewardTrainer and DPOTrainer (baselines.py).

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
