"""Boot real images under QEMU and check real answers."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.bench.http import first_answer
from krait.image.archive import open_image
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.ports import free_port
from krait.vmm.qemu import QemuBackend

from ._examples import app_pid
from .conftest import Boot, krait_cli, krait_running

pytestmark = pytest.mark.vm


def test_hello_answers_http_200_and_stops_gracefully(hello_image: Path,
                                                    no_leftover_qemu: None) -> None:
    port = free_port()
    _, spec = prepare(hello_image, RunOptions(ports=(PortForward(port, 8080),)))
    vm = QemuBackend().start(spec)
    try:
        assert vm.wait_ready(90), vm.console_tail()
        import time

        status, body = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
        assert status == 200
        assert body.startswith(b"Hello from a krait unikernel")
        assert app_pid(body) > 1  # the app runs in PID 1's child, which PID 1 outlives
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
        assert missing.value.code == 404
        # The guest reported when each step of its boot was done, in order.
        steps = sorted(vm.timeline, key=vm.timeline.__getitem__)
        assert steps == ["exec", "main", "mounted", "confined", "imported", "ready"], vm.timeline
        assert 0 < vm.timeline["exec"] < vm.timeline["ready"] < 60
    finally:
        result = vm.stop(grace=20)
    assert result.exit_status == 0, result.console_tail
    assert "hello ready on port 8080" in result.console_tail


def test_nothing_of_the_image_is_held_in_guest_ram(hello_image: Path,
                                                   no_leftover_qemu: None, booted: Boot) -> None:
    """The layers are read-only disks, paged in as used: hello answers in a guest whose
    RAM could not hold its files and its heap at once."""
    base = open_image(hello_image).manifest.layer("base")
    assert base is not None and base.unpacked_size > 15 * 2**20
    with booted(hello_image, memory=32, check_memory=False) as vm:
        assert [d.name for d in vm.spec.disks] == ["base", "app"]
        assert all(d.readonly for d in vm.spec.disks)
        status, body = first_answer(vm.url("/"), time.monotonic() + 60)
        assert status == 200 and body.startswith(b"Hello from a krait unikernel")


def test_main_exit_status_becomes_krait_run_status(make_app: Callable[..., Path],
                                                   build: Callable[[Path], Path],
                                                   no_leftover_qemu: None) -> None:
    image = build(make_app("""
        def main():
            print("about to exit with 3")
            return 3
    """))
    proc = krait_cli("run", image)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "about to exit with 3" in proc.stdout


def test_crashing_app_shows_traceback_and_fails(make_app: Callable[..., Path],
                                                build: Callable[[Path], Path],
                                                no_leftover_qemu: None) -> None:
    image = build(make_app("""
        def helper():
            raise RuntimeError("boom at boot")

        def main():
            helper()
    """))
    proc = krait_cli("run", image)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stdout
    assert "RuntimeError: boom at boot" in proc.stdout
    assert 'in helper' in proc.stdout  # tracebacks name functions even without sources


def test_root_is_read_only_and_there_is_no_shell(make_app: Callable[..., Path],
                                                 build: Callable[[Path], Path],
                                                 no_leftover_qemu: None) -> None:
    image = build(make_app("""
        import errno, os

        def main():
            try:
                open("/written-by-app", "w")
                print("ROOT-WRITABLE")
            except OSError as e:
                print("ROOT-READONLY" if e.errno == errno.EROFS else f"ROOT-ERROR {e}")
            for shell in ("/bin/sh", "/bin/bash", "/usr/bin/sh"):
                print(("HAS " if os.path.exists(shell) else "NO ") + shell)
            with open("/tmp/scratch", "w") as f:  # /tmp is the one writable place
                f.write("ok")
            print("PID", os.getpid(), "PARENT", os.getppid())
            return 0
    """))
    proc = krait_cli("run", image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ROOT-READONLY" in proc.stdout
    for shell in ("/bin/sh", "/bin/bash", "/usr/bin/sh"):
        assert f"NO {shell}" in proc.stdout
    # The app is PID 1's child: PID 1 is krait's runtime, which reaps and outlives it.
    assert "PARENT 1" in proc.stdout and "PID 1 " not in proc.stdout


def test_env_reaches_the_app_from_its_own_disk(make_app: Callable[..., Path],
                                               build: Callable[[Path], Path],
                                               no_leftover_qemu: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    image = build(make_app("""
        import os

        def main():
            print("BAKED=" + os.environ.get("BAKED", "-"))
            print("BOOT=" + os.environ.get("AT_BOOT", "-"))
            print("LARGE=%d" % len(os.environ.get("LARGE", "")))
            print("PASSED=" + os.environ.get("PASSED", "-"))
            with open("/proc/cmdline") as f:
                print("ON-CMDLINE=" + str("given at boot" in f.read()))
    """, extra='env = { BAKED = "in the image" }\n'))
    # More than a kernel command line could ever carry (2047 bytes).
    monkeypatch.setenv("PASSED", "from krait's environment")  # on no command line at all
    proc = krait_cli("run", image, "--env", "AT_BOOT=given at boot, with spaces",
                     "--env", "LARGE=" + "x" * 10000, "--env", "PASSED")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BAKED=in the image" in proc.stdout
    assert "BOOT=given at boot, with spaces" in proc.stdout
    assert "LARGE=10000" in proc.stdout
    assert "PASSED=from krait's environment" in proc.stdout
    assert "ON-CMDLINE=False" in proc.stdout


def test_a_port_opens_when_the_app_is_ready_and_ctrl_c_stops_krait_run_gracefully(
        hello_image: Path, no_leftover_qemu: None) -> None:
    """Before the app is ready its port refuses connections, as a process's does (QEMU
    accepting them would hold them for seconds past the boot); then it answers."""
    port = free_port()
    with krait_running("run", hello_image, "-p", f"{port}:8080") as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        tries = 0
        deadline = time.monotonic() + 90
        while not any(" ready on port 8080" in line for line in list(lines)):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            with socket.socket() as s, contextlib.suppress(ConnectionRefusedError):
                s.connect(("127.0.0.1", port))
                pytest.fail(f"connected before the app was ready: {lines}")
            tries += 1
            time.sleep(0.01)
        assert tries > 10
        status, _ = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
        assert status == 200
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        reader.join(10)
        out, err = "".join(lines), proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, out + err  # the app ended cleanly on SIGTERM
    assert "stopping" in err
