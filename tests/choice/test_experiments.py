import json

import numpy as np
import pytest

from aihf.choice import experiments, quickstart


def test_variance_matches_the_papers_formulas(tmp_path):
    report = experiments.variance(tmp_path, repeats=4000, seed=1, configs=((0.7, 60, 40),))
    saved = json.loads((tmp_path / "variance.json").read_text())["configs"][0]
    var, theory = saved["variance"], saved["theory"]
    # Monte-Carlo error of a variance estimate with 4000 draws is about 2.2% (relative)
    assert var["aihf"] == pytest.approx(theory["aihf"], rel=0.1)
    assert var["sft"] == pytest.approx(theory["sft"], rel=0.1)
    assert var["rm"] == pytest.approx(theory["rm"], rel=0.1)
    assert var["aihf"] < min(var["sft"], var["rm"], var["rlhf"])
    assert saved["mean"]["aihf"] == pytest.approx(0.7, abs=0.01)
    assert len(report.rows) == 1


def test_sweep_writes_heat_map_and_aihf_wins_with_both_sources(tmp_path):
    report = experiments.sweep(tmp_path, demo_sizes=(30, 300), pref_sizes=(30, 300), repeats=8, seed=2)
    for suffix in ("json", "csv", "png"):
        assert (tmp_path / f"sweep.{suffix}").stat().st_size > 0
    saved = json.loads((tmp_path / "sweep.json").read_text())
    aihf, sft = np.array(saved["tv_mean"]["aihf"]), np.array(saved["tv_mean"]["sft"])
    assert aihf.shape == (2, 2) and np.all(aihf < sft)  # the preferences always help AIHF here
    assert "AIHF" in report.table()


def test_example2_small(tmp_path):
    report = experiments.example2(tmp_path, repeats=2, n_actions=12, n_covered=9, n_demos=500, per_pair=50)
    saved = json.loads((tmp_path / "example2.json").read_text())
    assert saved["covered"] == "0..8" and saved["max_residual"] < 1e-9
    assert saved["uncovered_mass"]["rlhf"]["mean"] == 0.0
    assert saved["uncovered_mass"]["aihf"]["mean"] > 0.1
    assert "mass on 9..11" in report.table()


@pytest.mark.slow
def test_quickstart_section(tmp_path):
    section = quickstart.run(tmp_path)
    for name in ("example1.png", "example2.png", "sweep.png"):
        assert (tmp_path / "choice" / name).is_file()
        assert f"(choice/{name})" in section
    assert "\\|D\\|" in section  # table cells with pipes are escaped
    assert section.endswith(quickstart.VERDICT)  # the section ends with what its numbers show and not
