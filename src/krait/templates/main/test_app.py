"""Run with `python -m pytest`: the job, as the VM runs it."""

from app import main


def test_main(capsys, monkeypatch):
    monkeypatch.setenv("WORDS", "a bbb cc")
    assert main() == 0
    assert "3 words, the longest is 'bbb'" in capsys.readouterr().out
