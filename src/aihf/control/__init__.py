"""aihf.control: AIHF with SAC on gymnasium / MuJoCo environments (see README.md in this folder).

Modules: `data` (trajectory / preference .npz format, validation, shipped-data fallback), `envs`
(seeded environments and exact snapshots), `reward` (reward net, learned-reward VecEnv wrapper, replay
re-scoring), `reward_learning` (the reward learner and its step), `backends` (stable-baselines3 or sbx
SAC), `algorithms` (one class per compared method, and `ALGORITHMS`, the table of them), `ipl` (Inverse
Preference Learning's critic update), `train` (the shared training loop, checkpoints), `callbacks`
(evaluation, checkpoint, progress and the user's hooks), `state` (checkpoint state without pickle),
`collect` (expert-data pipeline), `bench` (multi-seed comparison, sharded and resumable), `config`
(`AIHFControlConfig`), `cli`, `quickstart`.
Kept import-free so that `aihf --help` does not load torch.
"""
