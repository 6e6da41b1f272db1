"""Snapshot identity and the QEMU options behind snapshot wake, without starting QEMU;
and reading a wrk report for the serve benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from krait.bench.http import parse_wrk
from krait.fleet import snapshot
from krait.image.check_requests import requests_for, warm_requests
from krait.vmm.accel import Accel
from krait.vmm.base import Disk, VmSpec
from krait.vmm.options import Incoming, PortForward
from krait.vmm.qemu import QemuBackend

SPEC = VmSpec(name="demo", kernel=Path("/k/vmlinux"), disks=(Disk("base", Path("/k/b")),),
              cmdline=("console=ttyS0", "krait.guest=1"), memory=48, vcpus=1,
              accel=Accel("tcg", "x"), ports=(PortForward(8080, 8080),),
              workdir=Path("/run/krait/demo"))
def image(digest: str, check: list[str] | None = None,
          connect: tuple[str, ...] = ()) -> SimpleNamespace:
    settings = {"kind": "asgi", "check": check}
    return SimpleNamespace(digest=digest, name="demo",
                           manifest=SimpleNamespace(settings=settings, ports=[8080],
                                                    boot=SimpleNamespace(connect=connect)))


IMAGE = image("a" * 64)


def key(spec: VmSpec, image: object = IMAGE) -> str:
    model = replace(spec, ports=(), workdir=None, console_log=None).with_qemu(qmp=True)
    return snapshot.key(image, spec, QemuBackend().command(model))  # type: ignore[arg-type]


def test_snapshot_key_follows_what_guest_memory_and_devices_hold() -> None:
    base = key(SPEC)
    # Host port forwards and folders live in the waking QEMU's command line, not in it.
    assert key(replace(SPEC, ports=(PortForward(9999, 8080),))) == base
    assert key(replace(SPEC, workdir=Path("/elsewhere"))) == base
    for changed in (replace(SPEC, memory=64), replace(SPEC, vcpus=2),
                    replace(SPEC, cmdline=(*SPEC.cmdline, "krait.boot=e30")),
                    replace(SPEC, accel=Accel("kvm", "x")),
                    replace(SPEC, disks=(Disk("base", Path("/k/b")), Disk("app", Path("/a"))))):
        assert key(changed) != base
    assert key(SPEC, image("b" * 64)) != base
    # The requests the template answered before it was saved: GET / by default.
    assert key(SPEC, image("a" * 64, ["GET /"])) == base
    assert key(SPEC, image("a" * 64, ["GET /", "GET /health"])) != base


def test_a_template_that_calls_services_is_not_warmed() -> None:
    # Its calls would leave the guest's end of the tunnel mid-stream in the snapshot.
    assert warm_requests(image("a" * 64)) == ("GET /",)  # type: ignore[arg-type]
    assert warm_requests(image("a" * 64, ["GET /x"])) == ("GET /x",)  # type: ignore[arg-type]
    calls = image("a" * 64, ["GET /x"], connect=("db=db.internal:5432",))
    assert warm_requests(calls) == ()  # type: ignore[arg-type]
    assert requests_for(image("a" * 64, connect=("db=db.internal:5432",))) is None  # type: ignore[arg-type]


def test_qmp_socket_only_when_asked() -> None:
    assert "-qmp" not in QemuBackend().command(SPEC)
    argv = QemuBackend().command(SPEC.with_qemu(qmp=True))
    assert argv[argv.index("-qmp") + 1] == "unix:/run/krait/demo/qmp.sock,server=on,wait=off"


def test_a_template_writes_its_ram_file_and_a_clone_maps_it_privately() -> None:
    template = QemuBackend().command(SPEC.with_qemu(ram_file=Path("/s/x.ram"), ram_shared=True))
    assert template[template.index("-M") + 1] == "microvm,acpi=off,memory-backend=ram"
    assert "memory-backend-file,id=ram,size=48M,mem-path=/s/x.ram,share=on" in template
    clone = QemuBackend().command(SPEC.with_qemu(ram_file=Path("/s/x.ram"), incoming=True))
    assert "memory-backend-file,id=ram,size=48M,mem-path=/s/x.ram,share=off" in clone
    # The state comes over QMP as a file descriptor: no exec: URI, nothing QEMU opens.
    assert clone[clone.index("-incoming") + 1] == "defer"
    assert Incoming().args() == ["-incoming", "defer"]


def test_ram_files_are_private_and_prune_keeps_the_newest_within_the_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("KRAIT_CACHE", str(tmp_path))
    snaps = []
    for i, name in enumerate(("old", "mid", "new")):
        snap = snapshot.Snapshot(snapshot.snapshots_dir() / f"{name}.ram",
                                 snapshot.snapshots_dir() / f"{name}.state")
        ram = snapshot.new_ram_file(snap)
        assert (ram.stat().st_mode & 0o777) == 0o600
        ram.write_bytes(b"r" * 8192)
        snap.state.write_bytes(b"s" * 100)
        snapshot.complete(snap, ram)
        snapshot.record_image(snap, f"digest-{name}")
        os.utime(snap.state, (1000 + i, 1000 + i))
        snaps.append(snap)
    assert (snapshot.snapshots_dir().stat().st_mode & 0o777) == 0o700
    assert [s.name for s in snapshot.all_snapshots()] == ["mid", "new", "old"]
    removed = snapshot.prune(limit=2 * (8192 + 100) + 10)
    assert [s.name for s in removed] == ["old"]
    assert snapshot.prune(image_digest="digest-new")[0].name == "new"
    assert [s.name for s in snapshot.all_snapshots()] == ["mid"]


def test_a_snapshot_whose_files_changed_is_not_intact(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("KRAIT_CACHE", str(tmp_path))
    snap = snapshot.Snapshot(snapshot.snapshots_dir() / "s.ram",
                             snapshot.snapshots_dir() / "s.state")
    ram = snapshot.new_ram_file(snap)
    ram.write_bytes(b"r" * 8192)
    snap.state.write_bytes(b"s" * 100)
    snapshot.complete(snap, ram)
    assert snap.intact()
    os.utime(snap.state)  # woken (for prune): touched, hashed again, still intact
    assert snap.intact()
    with snap.ram.open("r+b") as f:  # one byte of guest memory, the size unchanged
        f.seek(4096)
        f.write(b"X")
    assert not snap.intact()
    snap.remove()
    assert list(snapshot.snapshots_dir().iterdir()) == []


WRK = """Running 10s test @ http://127.0.0.1:4000/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.90ms    9.26ms 256.16ms   96.99%
    Req/Sec   509.52     65.83   610.00     78.00%
  Latency Distribution
     50%   15.28ms
     75%   17.01ms
     90%   23.93ms
     99%  1.20s
  10157 requests in 10.01s, 1.21MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:   1014.70
Transfer/sec:    124.06KB
"""


def test_parse_wrk() -> None:
    r = parse_wrk(WRK)
    assert r["requests"] == 10157
    assert r["requests_per_s"] == 1014.7
    assert r["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 1}
    assert r["non_2xx"] == 2
    assert r["errors"] == 6
    assert r["latency_ms"] == {"p50": 15.28, "p90": 23.93, "p99": 1200.0}


def test_parse_wrk_clean_run_has_zero_errors() -> None:
    clean = "\n".join(line for line in WRK.splitlines()
                      if "Socket errors" not in line and "Non-2xx" not in line)
    assert parse_wrk(clean)["errors"] == 0


def test_cli_lists_and_prunes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("KRAIT_CACHE", str(tmp_path))
    snap = snapshot.Snapshot(snapshot.snapshots_dir() / "one.ram",
                             snapshot.snapshots_dir() / "one.state")
    snap.ram.write_bytes(b"r" * 4096)
    snap.state.write_bytes(b"s" * 10)
    krait = [sys.executable, "-m", "krait.cli", "snapshot"]
    listed = subprocess.run([*krait, "ls", "--json"], capture_output=True, text=True, check=True)
    assert [row["name"] for row in __import__("json").loads(listed.stdout)] == ["one"]
    pruned = subprocess.run([*krait, "prune", "--all"], capture_output=True, text=True,
                            check=True)
    assert "removed one" in pruned.stdout and not snap.exists()
