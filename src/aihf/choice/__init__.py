"""aihf.choice: the exact discrete-choice lab of the paper (METHOD.md section 6).

SFT, preference-only reward (BTL), RLHF and AIHF estimators solved exactly for N discrete actions,
synthetic-data samplers and the paper's experiments. See docs/choice.md.
"""

from aihf.choice.data import ChoiceData, load_data, make_data
from aihf.choice.estimators import (
    Estimates,
    Fit,
    aihf_objective,
    aihf_reward,
    btl_reward,
    estimate_all,
    rlhf_policy,
    sft_policy,
)

__all__ = [
    "ChoiceData",
    "Estimates",
    "Fit",
    "aihf_objective",
    "aihf_reward",
    "btl_reward",
    "estimate_all",
    "load_data",
    "make_data",
    "rlhf_policy",
    "sft_policy",
]
