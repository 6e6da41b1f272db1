"""What an ordinary library asks of Linux, asked in the guest (issue #24): who the user
is, where home is, what 'localhost' is, a terminal, a file lock, a mapped file, signals
between a parent and its child, a helper script run as a file, daemon threads still
running at exit, madvise and fadvise. One boot; each check prints its own line, so a
failure names what differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import krait_cli

pytestmark = pytest.mark.vm

APP = """
    import fcntl, getpass, grp, mmap, os, pwd, signal, socket, subprocess, sys, time

    HERE = os.path.dirname(os.path.abspath(__file__))

    def check(name, ok):
        print(("OK " if ok else "DIFFERS ") + name, flush=True)

    def main():
        check("getuser", getpass.getuser() == "root")
        check("pwd", pwd.getpwuid(os.getuid()).pw_dir == "/tmp"
              and pwd.getpwnam("nobody").pw_uid == 65534)
        check("grp", grp.getgrgid(os.getgid()).gr_name == "root")
        check("expanduser", os.path.expanduser("~root") == "/tmp")
        check("localhost", socket.gethostbyname("localhost") == "127.0.0.1"
              # through the idna codec, as every create_connection((host, port)) does
              and socket.getaddrinfo("localhost", 80)[0][4][0] == "127.0.0.1")
        check("services", socket.getservbyname("http", "tcp") == 80
              and socket.getprotobyname("tcp") == 6)
        main_fd, tty_fd = os.openpty()
        os.write(tty_fd, b"through a terminal\\n")
        check("openpty", os.isatty(tty_fd) and b"terminal" in os.read(main_fd, 100))
        with open("/tmp/locked", "w+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.write(b"x" * 4096)
            f.flush()
            with mmap.mmap(f.fileno(), 4096) as m:
                m[:5] = b"hello"
            f.seek(0)
            check("lock and mmap", f.read(5) == b"hello")
        # A child that waits for the parent's signal and answers with one of its own.
        got = []
        signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
        child = subprocess.Popen([sys.executable, "-c", (
            "import os, signal\\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\\n"
            "print('child waiting', flush=True)\\n"
            "signal.sigwait({signal.SIGUSR1})\\n"
            "os.kill(os.getppid(), signal.SIGUSR2)\\n")], stdout=subprocess.PIPE)
        child.stdout.readline()
        child.send_signal(signal.SIGUSR1)
        child.wait(30)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        check("signals to and from a child", got == [signal.SIGUSR2] and child.returncode == 0)
        helper = subprocess.run([sys.executable, os.path.join(HERE, "helper.py")],
                                capture_output=True, text=True)
        check("helper script", helper.stdout == "helper ran\\n")
        # Daemon threads still running at exit: CPython ends them with pthread_exit.
        daemons = subprocess.run([sys.executable, "-c", (
            "import sys, threading, time\\n"
            "def spin():\\n"
            "    while True: time.sleep(0.0001)\\n"
            "for _ in range(8): threading.Thread(target=spin, daemon=True).start()\\n"
            "time.sleep(0.2)\\n"
            "sys.exit(0)\\n")], capture_output=True, text=True)
        check("daemon threads at exit", daemons.returncode == 0)
        print(daemons.stderr, flush=True)
        # madvise and posix_fadvise (glibc's malloc, mmap.madvise, databases).
        with open("/tmp/advised", "w+b") as f:
            f.write(b"x" * 8192)
            f.flush()
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            with mmap.mmap(f.fileno(), 8192) as m:
                m.madvise(mmap.MADV_DONTNEED)
        check("advice", True)
        return 0
"""


def test_what_ordinary_libraries_ask_of_linux(make_app: Callable[..., Path],
                                              build: Callable[[Path], Path],
                                              no_leftover_qemu: None) -> None:
    folder = make_app(APP)
    (folder / "helper.py").write_text("print('helper ran')\n")
    proc = krait_cli("run", build(folder), timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "DIFFERS" not in out, out
    for name in ("getuser", "pwd", "grp", "expanduser", "localhost", "services", "openpty",
                 "lock and mmap", "signals to and from a child", "helper script",
                 "daemon threads at exit", "advice"):
        assert f"OK {name}" in out, out
