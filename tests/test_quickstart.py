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
