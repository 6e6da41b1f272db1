"""Snapshot identity and the QEMU options behind snapshot wake, without starting QEMU;
and reading a wrk report for the serve benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from krait.bench.http import parse_wrk
from krait.fleet import snapshot
from krait.vmm.accel import Accel
from krait.vmm.base import Disk, VmSpec
from krait.vmm.options import Incoming, PortForward
from krait.vmm.qemu import QemuBackend

SPEC = VmSpec(name="demo", kernel=Path("/k/vmlinux"), disks=(Disk("base", Path("/k/b")),),
              cmdline=("console=ttyS0", "krait.guest=1"), memory=48, vcpus=1,
              accel=Accel("tcg", "x"), ports=(PortForward(8080, 8080),),
              workdir=Path("/run/krait/demo"))
IMAGE = SimpleNamespace(digest="a" * 64, name="demo")


def test_snapshot_key_follows_what_guest_memory_holds() -> None:
    key = snapshot.key(IMAGE, SPEC)  # type: ignore[arg-type]
    # Host port forwards live in the waking QEMU's command line, not in the snapshot.
    assert snapshot.key(IMAGE, replace(SPEC, ports=(PortForward(9999, 8080),))) == key  # type: ignore[arg-type]
    for changed in (replace(SPEC, memory=64), replace(SPEC, vcpus=2),
                    replace(SPEC, cmdline=(*SPEC.cmdline, "krait.boot=e30")),
                    replace(SPEC, accel=Accel("kvm", "x"))):
        assert snapshot.key(IMAGE, changed) != key  # type: ignore[arg-type]
    other = SimpleNamespace(digest="b" * 64, name="demo")
    assert snapshot.key(other, SPEC) != key  # type: ignore[arg-type]


def test_qmp_socket_only_when_asked() -> None:
    assert "-qmp" not in QemuBackend().command(SPEC)
    argv = QemuBackend().command(replace(SPEC, qmp=True))
    assert argv[argv.index("-qmp") + 1] == "unix:/run/krait/demo/qmp.sock,server=on,wait=off"


def test_incoming_reads_the_snapshot_file_quoted() -> None:
    argv = QemuBackend().command(replace(SPEC, incoming=Path("/s/demo.state")))
    assert argv[argv.index("-incoming") + 1] == "exec:cat /s/demo.state"
    assert Incoming(Path("/s/a b.state")).args() == ["-incoming", "exec:cat '/s/a b.state'"]


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
