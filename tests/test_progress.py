import io

from tensorforge.util.progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_on_a_terminal_only(monkeypatch):
    monkeypatch.delenv("TENSORFORGE_PROGRESS", raising=False)
    tty = _Tty()
    with Progress(4, "work", stream=tty, min_interval=0) as p:
        for _ in range(4):
            p.update(1, loss=0.5)
    out = tty.getvalue()
    assert "work" in out and "4/4" in out and "loss=0.5" in out
    plain = io.StringIO()
    with Progress(4, "work", stream=plain) as p:
        p.update(4)
    assert plain.getvalue() == ""
