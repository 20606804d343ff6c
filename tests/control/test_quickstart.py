import pytest

from aihf.control import quickstart


@pytest.mark.slow
def test_quickstart_section(tmp_path):
    section = quickstart.run(tmp_path)
    assert "| AIHF |" in section and "| RLHF (BC -> RM -> SAC) |" in section
    assert "control/curves.png" in section and (tmp_path / "control" / "curves.png").is_file()
