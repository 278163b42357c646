"""Progress bars by default on a terminal and in a notebook's kernel, never in a build."""

import sys

from probseq._utils import progress_bar, show_progress


def test_default_follows_terminal_notebook_and_the_override(monkeypatch):
    monkeypatch.delenv("PROBSEQ_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not show_progress()
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # running in a notebook
    assert show_progress()
    monkeypatch.setenv("PROBSEQ_PROGRESS", "0")  # the documentation build
    assert not show_progress()
    assert progress_bar(3, None, "x").disable
    monkeypatch.setenv("PROBSEQ_PROGRESS", "1")
    bar = progress_bar(3, None, "x")
    assert not bar.disable and bar.fp is not None
    bar.close()
    assert progress_bar(3, False, "x").disable  # an explicit choice wins
