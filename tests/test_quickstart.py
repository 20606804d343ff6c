import threading

from aihf import quickstart


def test_heartbeat_prints_while_a_section_runs(monkeypatch):
    """A section that outlasts the interval gets a line naming it; the thread stops with the section."""
    lines: list[str] = []
    beat = threading.Event()

    def record(*args, **kwargs):
        lines.append(" ".join(map(str, args)))
        beat.set()

    monkeypatch.setattr("builtins.print", record)
    before = set(threading.enumerate())
    with quickstart.heartbeat("Control", every=0.01):
        assert beat.wait(30)  # the body lasts until the first beat, however slow the machine
    assert lines[0].startswith("quickstart: Control: running")
    assert set(threading.enumerate()) <= before  # its thread was joined on exit


def test_sections_get_the_idle_cores_or_the_workers_asked_for(monkeypatch, tmp_path, capsys):
    import os
    import sys
    import types

    from aihf import cli, threads

    given: list[int] = []
    fake = types.ModuleType("fake.quickstart")
    fake.run = lambda out, workers: given.append(workers) or "text"
    monkeypatch.setitem(sys.modules, "fake.quickstart", fake)
    monkeypatch.setattr(
        quickstart, "SECTIONS", tuple((f"Section {i}", "fake.quickstart", None) for i in range(3))
    )
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))  # one core held by another job
    assert threads.idle_cores() == 3
    assert cli.main(["quickstart", "--out", str(tmp_path / "a")]) == 0
    assert given == [3, 3, 3] and "text" in (tmp_path / "a" / "report.md").read_text()
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 0.0, 0.0))  # busier than the cores: still one
    assert threads.idle_cores() == 1
    given.clear()
    assert cli.main(["quickstart", "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    assert given == [2, 2, 2]
    assert cli.main(["quickstart", "--out", str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "--workers 0: expected a positive count" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
