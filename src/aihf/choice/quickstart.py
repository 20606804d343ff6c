"""Quick run for `aihf quickstart`: Example 1 (both data sets), Example 2 (100 repeats) and a small
data-ratio sweep, with plots under out_dir/choice/ (a few seconds)."""

from __future__ import annotations

from pathlib import Path

from aihf.choice import experiments


def run(out_dir: Path) -> str:
    choice_dir = Path(out_dir) / "choice"
    reports = [
        experiments.example1(choice_dir),
        experiments.example2(choice_dir, repeats=100),
        experiments.sweep(choice_dir, demo_sizes=(10, 100, 1000), pref_sizes=(10, 100, 1000), repeats=20),
    ]
    intro = (
        "Exact solutions of the paper's discrete-choice analysis (v1 section 4): SFT = n/|D|, RM = BTL "
        "maximum likelihood, RLHF = pi_SFT * exp(r_P / beta), AIHF = joint maximum likelihood of "
        "demonstrations and preferences (Newton's method, first-order residual reported). "
        "Reproduce with `aihf choice example1|example2|sweep|variance --out DIR`.\n"
    )
    return "\n\n".join([intro, *(report.markdown(Path(out_dir)) for report in reports)])
