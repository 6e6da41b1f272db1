"""The guest's seccomp filter, installed for real in a child process on this host's
kernel: what it refuses, and that ordinary work (files, TCP, fork, exec) goes on.
Run as root (as CI does), each refusal is the filter's; the capabilities are dropped
only in a VM (tests/vm/test_confined.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from krait.guest import confine

CHILD = r"""
import ctypes, errno, json, os, socket, subprocess, sys
from krait.guest import confine

libc = ctypes.CDLL(None, use_errno=True)
confine.install_filter(libc)

def refused(call):
    try:
        call()
    except OSError as e:
        return e.errno
    return 0

def syscall(name, *args):
    def call():
        if libc.syscall(confine.REFUSED[name], *args) != 0:
            raise OSError(ctypes.get_errno(), name)
    return call

def mount():
    target = sys.argv[2].encode()
    if libc.mount(b"none", target, b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    libc.umount2(target, 0)  # it worked: the filter failed; leave the host as it was

out = {
    "mount": refused(mount),
    "unshare": refused(syscall("unshare", 0x20000)),
    "packet": refused(lambda: socket.socket(17, socket.SOCK_RAW, 0)),
    "raw": refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                         socket.IPPROTO_ICMP)),
    "tcp": refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "file": refused(lambda: open(sys.argv[1], "w").write("ok")),
    "exec": subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                           text=True).stdout.strip(),
}
print(json.dumps(out))
"""


def test_the_filter_refuses_mounts_namespaces_and_raw_sockets_and_nothing_else(
        tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "written"),
                           str(tmp_path / "mnt")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == {"mount": 1, "unshare": 1, "packet": 1, "raw": 1, "tcp": 0, "file": 0,
                   "exec": "42"}, got
    assert (tmp_path / "written").read_text() == "ok"


def test_every_jump_of_the_program_lands_inside_it() -> None:
    program = confine.filter_program()
    assert len(program) < 256
    for i, (code, jt, jf, _k) in enumerate(program):
        if code in (0x15, 0x35):
            assert i + 1 + max(jt, jf) < len(program)
    assert program[-1] == (0x06, 0, 0, 0x00050001)  # the EPERM return, last
