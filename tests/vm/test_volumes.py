"""Data volumes on booted images: kept across boots, read-only when asked, raw when the
app owns the blocks, one VM's at a time, and nothing acknowledged lost to a SIGKILL."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.bench.http import first_answer
from krait.vmm.booted import booted

from .conftest import krait_cli

pytestmark = pytest.mark.vm

COUNTER_APP = """
    import os

    def main():
        raw = os.environ.get("KRAIT_VOLUME_BLOCKS")
        if raw:
            with open(raw, "r+b") as disk:
                disk.seek(4096)
                disk.write(b"written by the app")
                os.fsync(disk.fileno())
            print("RAW=" + raw)
            return 0
        path = "/data/count"
        count = int(open(path).read()) if os.path.exists(path) else 0
        print(f"READ={count}")
        try:
            with open(path, "w") as f:
                f.write(str(count + 1))
                f.flush()
                os.fsync(f.fileno())
            print(f"COUNT={count + 1}")
        except OSError as e:
            print(f"WRITE-ERRNO={e.errno}")
        with open("/proc/mounts") as f:
            print("MOUNT=" + next(line for line in f if " /data " in line).split()[3])
        return 0
"""


def volume(tmp_path: Path, name: str = "data.img", *args: str) -> Path:
    path = tmp_path / name
    made = krait_cli("volume", "create", path, "--size", "32M", *args)
    assert made.returncode == 0, made.stderr
    return path


def test_a_volume_keeps_its_data_and_a_read_only_one_refuses_writes(
        make_app: Callable[..., Path], build: Callable[[Path], Path], tmp_path: Path,
        no_leftover_qemu: None) -> None:
    image = build(make_app(COUNTER_APP, extra='volumes = ["/data"]\n'))
    data = volume(tmp_path)
    for expected in (1, 2):
        proc = krait_cli("run", image, "--volume", f"{data}:/data")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"COUNT={expected}" in proc.stdout
    mount = next(line for line in proc.stdout.splitlines() if line.startswith("MOUNT="))
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(mount[6:].split(","))
    proc = krait_cli("run", image, "--volume", f"{data}:/data:ro")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "READ=2" in proc.stdout and "WRITE-ERRNO=30" in proc.stdout  # EROFS
    # The image says it needs /data: without it, a clear error and no VM.
    proc = krait_cli("run", image)
    assert proc.returncode == 1 and "expects a volume at /data" in proc.stderr
    assert subprocess.run(["e2fsck", "-fn", str(data)], capture_output=True).returncode == 0


def test_a_raw_volume_is_the_apps_blocks(make_app: Callable[..., Path],
                                         build: Callable[[Path], Path], tmp_path: Path,
                                         no_leftover_qemu: None) -> None:
    image = build(make_app(COUNTER_APP))
    blocks = volume(tmp_path, "blocks.img", "--raw")
    proc = krait_cli("run", image, "--volume", f"{blocks}:blocks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RAW=/dev/vd" in proc.stdout
    with blocks.open("rb") as f:
        f.seek(4096)
        assert f.read(18) == b"written by the app"


def test_bad_volumes_are_refused_before_anything_boots(make_app: Callable[..., Path],
                                                       build: Callable[[Path], Path],
                                                       tmp_path: Path,
                                                       no_leftover_qemu: None) -> None:
    image = build(make_app(COUNTER_APP))
    raw = volume(tmp_path, "raw.img", "--raw")
    for spec, message in ((f"{tmp_path}/missing.img:/data", "no such file"),
                          (f"{raw}:/data", "not an ext4 file system"),
                          (f"{raw}:/etc", "neither /data, /mnt/NAME nor")):
        proc = krait_cli("run", image, "--volume", spec)
        assert proc.returncode == 1, proc.stdout
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert krait_cli("volume", "create", raw).returncode == 1  # never overwritten
    small = krait_cli("volume", "create", tmp_path / "tiny.img", "--size", "1M")
    assert small.returncode == 1 and "too small" in small.stderr


APPEND_APP = """
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            with open("/data/log", "ab") as f:
                f.write(body + b"\\n")
                f.flush()
                os.fsync(f.fileno())  # answered only once it is on the disk
            answer = b"ok"
        else:
            answer = open("/data/log", "rb").read() if os.path.exists("/data/log") else b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})
"""


def test_nothing_acknowledged_is_lost_when_qemu_is_killed(make_app: Callable[..., Path],
                                                          build: Callable[[Path], Path],
                                                          tmp_path: Path,
                                                          no_leftover_qemu: None) -> None:
    image = build(make_app(APPEND_APP, kind="asgi", entry="app:app",
                           extra='ports = [8080]\nvolumes = ["/data"]\n'))
    data = volume(tmp_path)
    answered: list[int] = []
    with booted(image, volumes=(f"{data}:/data",)) as vm:
        assert first_answer(vm.url("/"), time.monotonic() + 60)[0] == 200

        def writer() -> None:
            for i in range(500):  # bounded; the kill ends it long before
                request = urllib.request.Request(vm.url("/"), data=f"record {i:04d}".encode(),
                                                 method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as r:
                        if r.read() == b"ok":
                            answered.append(i)
                except OSError:
                    return

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 120
        while len(answered) < 30 and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        vm.vm.kill()  # SIGKILL, in the middle of the load
        thread.join(30)
    assert len(answered) >= 30
    with booted(image, volumes=(f"{data}:/data",)) as vm:
        log = urllib.request.urlopen(vm.url("/"), timeout=60).read().decode()
    kept = {int(line.split()[1]) for line in log.splitlines() if line.startswith("record ")}
    assert set(answered) <= kept, sorted(set(answered) - kept)
    # Stopped cleanly this time: the file system is clean (the journal was replayed).
    fsck = subprocess.run(["e2fsck", "-fn", str(data)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def test_a_read_write_volume_is_one_vms_at_a_time(make_app: Callable[..., Path],
                                                  build: Callable[[Path], Path], tmp_path: Path,
                                                  no_leftover_qemu: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from .fleet_support import private_state

    image = build(make_app(APPEND_APP, kind="asgi", entry="app:app",
                           extra="ports = [8080]\n"))
    data = volume(tmp_path)
    with private_state(monkeypatch):
        started = krait_cli("run", "-d", "--name", "holder", image, "--volume",
                            f"{data}:/data")
        assert started.returncode == 0, started.stderr
        try:
            for mode in ("", ":ro"):
                proc = krait_cli("run", image, "--volume", f"{data}:/data{mode}")
                assert proc.returncode == 1, proc.stdout
                assert "is in use by another VM" in proc.stderr
        finally:
            assert krait_cli("stop", "holder").returncode == 0
            krait_cli("rm", "holder")
        # Stopped: the volume is free again.
        from krait.vmm.volumes import Volume, VolumeLock

        VolumeLock((Volume(data, "/data"),)).release()
