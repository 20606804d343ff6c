"""aihf.control: AIHF with SAC on gymnasium / MuJoCo environments (see README.md in this folder).

Modules: `data` (trajectory / preference .npz format and validation), `reward` (reward net, learned-reward
VecEnv wrapper, replay re-scoring), `train` (the AIHF loop and baselines), `collect` (expert-data
pipeline), `bench` (multi-seed comparison), `config` (`AIHFControlConfig`), `cli`, `quickstart`.
Kept import-free so that `aihf --help` does not load torch.
"""
