"""The console as krait keeps it: lines bounded in memory, the log bounded on disk."""

from __future__ import annotations

from pathlib import Path

from krait.vmm.console import MAX_LINE, ConsoleLog, Lines


def test_lines_are_split_across_reads_and_cr_is_dropped() -> None:
    lines = Lines()
    assert lines.feed(b"boot") == []
    assert lines.feed(b"ing\r\nready\nhal") == ["booting", "ready"]
    assert lines.rest() == ["hal"] and lines.rest() == []


def test_a_line_without_end_is_cut_not_held() -> None:
    lines = Lines()
    out = []
    for _ in range(100):
        out += lines.feed(b"x" * 1000)  # 100 KB, no newline
    assert all(len(line) == MAX_LINE for line in out) and len(out) == 100_000 // MAX_LINE
    assert len(lines.rest()[0]) == 100_000 % MAX_LINE


def test_the_log_rotates_and_holds_at_most_twice_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    log = ConsoleLog(path, max_bytes=1000)
    for i in range(500):
        log.write(f"line {i:04}\n".encode())  # 10 bytes each: 5000 in all
    log.close()
    rotated = ConsoleLog.rotated(path)
    assert path.stat().st_size < 1000 and rotated.stat().st_size == 1000
    kept = (rotated.read_bytes() + path.read_bytes()).decode().splitlines()
    assert kept[-1] == "line 0499"
    assert kept == [f"line {i:04}" for i in range(500 - len(kept), 500)]  # the newest, in order


def test_a_new_run_appends(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    for word in (b"first\n", b"second\n"):
        log = ConsoleLog(path)
        log.write(word)
        log.close()
    assert path.read_bytes() == b"first\nsecond\n"


def test_logs_colour_kraits_lines_the_kernels_and_a_traceback_on_a_terminal() -> None:
    import io

    from krait.cli.logs import CYAN, DIM, RED, RESET, Colours

    out = io.BytesIO()
    colours = Colours(out)
    text = (b"[    0.12] virtio_blk virtio0\nkrait: app ready\nplain line\n"
            b"Traceback (most recent call last):\n  File \"app.py\", line 1\n"
            b"ValueError: no\nafter\npart")
    for i in range(0, len(text), 7):  # in chunks that cut lines anywhere
        colours.write(text[i:i + 7])
    assert out.getvalue().split(b"\n") == [
        DIM + b"[    0.12] virtio_blk virtio0" + RESET, CYAN + b"krait: app ready" + RESET,
        b"plain line", RED + b"Traceback (most recent call last):" + RESET,
        RED + b'  File "app.py", line 1' + RESET, RED + b"ValueError: no" + RESET,
        b"after", b""]  # "part" waits for the rest of its line
    colours.finish()
    assert out.getvalue().endswith(b"after\npart")  # the console ended mid-line
