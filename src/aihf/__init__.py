"""aihf: Alignment with Integrated Human Feedback (arXiv 2406.06874).

Learns the reward model and the policy jointly from demonstrations and preferences, in one stage.
Domains: `aihf.choice` (exact discrete choice), `aihf.control` (gymnasium MDPs with SAC),
`aihf.lm` (Hugging Face causal LMs). All share the loss core in `aihf.losses`.
"""

__version__ = "0.1.0"
