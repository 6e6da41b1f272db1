"""`make bench-backends`: `krait bench backends` on hosts of its own.

Starts a libvirtd, virtlogd and sshd as the tests do (tests/vm/_hosts.py: no systemd, each
ended by its PID), so the engines compared are QEMU started by krait, libvirt on this
machine, and libvirt over qemu+ssh (this machine reached over SSH), all in one run.

    python -m scripts.bench_backends IMAGE [krait bench backends options...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.vm._hosts import libvirtd_running, pool_folder, ssh_uri, sshd_running

from krait.vmm.libvirt import POOL_ENV


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    image, *options = argv
    pool = pool_folder()
    os.environ[POOL_ENV] = str(pool)
    try:
        with tempfile.TemporaryDirectory(prefix="krait-hosts-") as scratch, \
                libvirtd_running(Path(scratch) / "libvirtd") as local, \
                sshd_running(Path(scratch) / "sshd") as (port, ssh):
            remote = ssh_uri(port, ssh, local.partition("socket=")[2])
            return subprocess.run([sys.executable, "-m", "krait.cli", "bench", "backends",
                                   image, "--on", local, "--on", remote, *options]
                                  ).returncode
    finally:
        shutil.rmtree(pool, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
