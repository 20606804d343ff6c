import pytest

from aihf.control import quickstart
from aihf.control.bench import _table


def _run(algo: str, seed: int, final: float) -> dict:
    curve = [(1000, final - 10), (2000, final - 5), (3000, final)]
    return {"algo": algo, "seed": seed, "eval_return_mean": final, "curve": curve, "total_steps": 3000}


def test_one_seed_table_shows_no_spread_and_several_seeds_do():
    one = _table({"aihf": [_run("aihf", 0, -150.0)]}, "Pendulum-v1", 3000)
    assert "-150.0 |" in one and "+-" not in one.split("\n", 1)[1] and "one seed" in one
    two = _table({"aihf": [_run("aihf", 0, -150.0), _run("aihf", 1, -250.0)]}, "Pendulum-v1", 3000)
    assert "-200.0 +- 70.7" in two


def test_verdict_compares_aihf_with_rlhf_per_seed_and_names_the_oracle_and_the_limits():
    def algo(*values):
        return {"per_seed": [{"last3_return": v} for v in values]}

    text = quickstart.verdict(
        {"aihf": algo(-150, -400), "rlhf": algo(-300, -350), "sac-true": algo(-140, -160)}
    )
    assert "AIHF (-275) is above RLHF (-325)" in text and "ahead in 1 of 2 seeds" in text
    assert "reaches -150, 125 above AIHF" in text and "2 seeds" in text
    text = quickstart.verdict({"aihf": algo(-900), "rlhf": algo(-300), "sac-true": algo(-140)})
    assert "AIHF (-900) is at or below RLHF (-300); " in text and "ahead in" not in text
    assert "With one seed and one short budget" in text


def test_verdict_says_plainly_when_aihf_did_not_learn_and_whether_its_reward_is_to_blame():
    def algo(start, end, **diagnostics):
        return {"per_seed": [{"last3_return": end, "curve": [[0, start], [6000, end]]}], **diagnostics}

    learned = quickstart.verdict(
        {"aihf": algo(-1500, -300), "rlhf": algo(-1500, -400), "sac-true": algo(-1500, -150)}
    )
    assert "does not learn" not in learned
    stuck = quickstart.verdict(
        {
            "aihf": algo(
                -1500, -900, heldout_preference_accuracy=[0.96], learned_true_return_correlation=[0.99]
            ),
            "rlhf": algo(-1500, -400),
            "sac-true": algo(-1500, -150),
        }
    )
    assert "At this budget AIHF does not learn Pendulum" in stuck and "random start (-1500)" in stuck
    part = quickstart.verdict(
        {"aihf": algo(-1500, -700), "rlhf": algo(-1500, -400), "sac-true": algo(-1500, -150)}
    )
    assert "learns only part of the way: from its random start (-1500) to -700, 59% of" in part
    assert "accuracy 0.96" in stuck and "true return 0.99" in stuck and "not the benchmark's verdict" in stuck


@pytest.mark.slow
def test_quickstart_section(tmp_path):
    section = quickstart.run(tmp_path)
    assert "| AIHF |" in section and "| RLHF (BC -> RM -> SAC) |" in section
    assert "| SAC on the true reward (oracle) |" in section and "**Verdict.**" in section
    assert "control/curves.png" in section and (tmp_path / "control" / "curves.png").is_file()
