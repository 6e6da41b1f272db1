"""``krait bench volume``: random 4 KiB write + fsync latency on a data volume, as the
guest sees it, against the same loop on a file of the host beside the volume."""

from __future__ import annotations

import inspect
import tempfile
import textwrap
import time
from pathlib import Path

from krait.bench.apps import probe_app
from krait.bench.result import Result, summarize
from krait.errors import KraitError
from krait.kernel import Kernel
from krait.vmm.booted import booted
from krait.vmm.volumes import create

FILE_MIB = 64
MARK, END = "KRAIT-BENCH ", "KRAIT-BENCH-END"


def fsync_latencies(path: str, writes: int, file_mib: int) -> list[float]:
    """Seconds for each write of 4 KiB at a random aligned offset, fsync'ed."""
    import os
    import random
    import time

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, file_mib << 20)
        block, offsets = os.urandom(4096), random.Random(1)
        latencies = []
        for _ in range(writes):
            offset = offsets.randrange((file_mib << 20) // 4096) * 4096
            started = time.perf_counter()
            os.pwrite(fd, block, offset)
            os.fsync(fd)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        os.close(fd)


# The guest runs the very same function (its source), on the volume at /data.
PROBE = textwrap.dedent(inspect.getsource(fsync_latencies)) + textwrap.dedent(f"""

    def main():
        import os
        latencies = fsync_latencies("/data/bench", int(os.environ["WRITES"]), {FILE_MIB})
        # One a line: the console cuts lines at 4 KiB.
        print("\\n".join({MARK!r} + repr(s) for s in latencies), flush=True)
        print({END!r}, flush=True)
        return 0
""")


def bench_volume(kernel: Kernel, accel: str, writes: int = 200) -> Result:
    with tempfile.TemporaryDirectory(prefix="krait-volume-") as tmp:
        image = probe_app(Path(tmp) / "probe", PROBE, 'name = "volume-probe"\n'
                          'entry = "app:main"\nvolumes = ["/data"]\n', kernel)
        volume = Path(tmp) / "data.img"
        create(volume, (FILE_MIB + 64) << 20)
        host = fsync_latencies(str(Path(tmp) / "host-file"), writes, FILE_MIB)
        with booted(image, env={"WRITES": str(writes)}, volumes=(f"{volume}:/data",)) as vm:
            deadline = time.monotonic() + 600
            while END not in vm.lines:
                if time.monotonic() > deadline or vm.vm.wait(0.2) is not None:
                    break
        guest = [float(line[len(MARK):]) for line in vm.lines if line.startswith(MARK)]
        if END not in vm.lines or len(guest) != writes:
            raise KraitError("the probe did not print its latencies: "
                             + " | ".join(vm.lines[-5:]))
    ms = [round(s * 1000, 4) for s in guest]
    host_ms = [round(s * 1000, 4) for s in host]
    return Result("volume-4k-write-fsync", "ms", ms, accel,
                  params={"writes": writes, "file_mib": FILE_MIB,
                          "drive": "virtio-blk, raw file, cache=writeback (flushes honoured)",
                          "filesystem": "ext4 (guest), data=ordered"},
                  extra={"host_file": {"unit": "ms", "samples": host_ms, **summarize(host_ms),
                                       "what": "the same loop on a file beside the volume"},
                         "guest_over_host_median": round(
                             summarize(ms)["median"] / summarize(host_ms)["median"], 2)})
