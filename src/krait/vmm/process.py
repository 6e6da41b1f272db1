"""The process target (`krait run --target process`): an image's app as a plain process
on this host, for an edit-run loop far quicker than a boot.

It runs the image's own interpreter (the same path on this host, the same version) with
``-I -S``, on the image's own layers: each unpacked once per digest into the cache
(``trees/``, with erofs-utils' ``fsck.erofs --extract``), the app from the app layer,
its packages from the packages layer, krait's runtime and the standard library from the
base layer (once the interpreter has started: a module the image lacks is missing here
too). The app gets its baked settings, this boot's
environment, the same readiness line and exit status, and listens on 127.0.0.1 at the
host side of each ``-p``. It is not contained as a VM is: it is for development.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from krait.errors import ConfigError
from krait.guest import protocol
from krait.guest.process import VARIABLE
from krait.paths import cache_dir, is_real_dir, krait_dir
from krait.run import popen, run
from krait.vmm.base import Backend, QemuOptions, VmSpec, VmStatus
from krait.vmm.child import child_status, kill_child, stop_child
from krait.vmm.ports import check_port_free
from krait.vmm.reporting import ChildVm

# The interpreter is started with this; it imports the runner from the image's runtime.
_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from krait.guest.process import main; main()")


def unpacked_tree(disk: Path, digest: str) -> Path:
    """A layer's files as a folder, made once per digest (the disk was checked already)."""
    tree = krait_dir(cache_dir(), "trees") / digest
    if is_real_dir(tree):
        return tree
    scratch = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=tree.parent))
    try:
        run(["fsck.erofs", f"--extract={scratch / 'tree'}", str(disk)], timeout=300)
        os.replace(scratch / "tree", tree)
    except OSError:
        if not is_real_dir(tree):  # not another krait's copy, made meanwhile
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tree


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, report: Path | None = None) -> None:
        """``report``: where the app's processes say, as they end, which modules they
        looked for that the image lacks (``REPORT.PID.json``; see krait.vmm.check)."""
        self.report = report

    def _interpreter(self, spec: VmSpec) -> str:
        path, version = spec.interpreter
        hint = ("run it as a VM (drop --target process), or build it with an interpreter "
                "this host has (python = \"...\" in [tool.krait])")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{spec.name} was built for {path}, which this host does "
                              "not have", hint=hint)
        found = run([path, "-I", "-S", "-c", "import platform; print(platform.python_version())"],
                    timeout=30).stdout.strip()
        if found != version:
            raise ConfigError(f"{path} is Python {found} here; {spec.name} was built "
                              f"for {version}", hint=hint)
        return path

    def command(self, spec: VmSpec) -> list[str]:
        runtime = Path("TREES") / "base" / protocol.RUNTIME_DIR.lstrip("/")
        return [self._interpreter(spec), "-I", "-S", "-c", _BOOTSTRAP, str(runtime)]

    def status(self, ref: str, detail: bool = True) -> VmStatus:
        return child_status(ref)

    def remove(self, ref: str) -> None:
        kill_child(ref)

    def stop(self, ref: str, grace: float = 10.0) -> None:
        stop_child(ref, grace)  # SIGTERM: the app stops as it would in the VM

    def start(self, spec: VmSpec, on_console: Callable[[str], None] | None = None
              ) -> ProcessVm:
        if spec.volumes:
            raise ConfigError("--target process has no volumes (they are a VM's disks)",
                              hint="run it as a VM to attach volumes")
        if spec.qemu != QemuOptions():
            raise ConfigError("--target process has no gdb stub, pause or snapshots",
                              hint="run it as a VM")
        interpreter = self._interpreter(spec)  # before anything is unpacked
        trees = {disk.name: unpacked_tree(disk.path, disk.digest) for disk in spec.disks}
        for forward in spec.ports:
            check_port_free("127.0.0.1", forward.host)
        boot = protocol.decode_boot(spec.boot_settings) if spec.boot_settings else {}
        scratch = Path(tempfile.mkdtemp(prefix="krait-process-"))
        ours, theirs = socket.socketpair()
        # Each layer holds its files relative to where it is mounted; the base is the root.
        handover = {"app": str(trees["app"]), "base": str(trees["base"]),
                    "packages": str(trees.get("packages", scratch)),
                    "control_fd": theirs.fileno(), "boot": boot,
                    "ports": {str(f.guest): f.host for f in spec.ports},
                    "report": str(self.report) if self.report else None}
        runtime = trees["base"] / protocol.RUNTIME_DIR.lstrip("/")
        try:
            proc = popen([interpreter, "-I", "-S", "-c", _BOOTSTRAP, str(runtime)],
                         cwd=scratch, stderr=subprocess.STDOUT,
                         env={VARIABLE: json.dumps(handover), "TMPDIR": str(scratch),
                              "LANG": "C.UTF-8"}, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            theirs.close()
        return ProcessVm(spec, proc, ours, scratch, on_console)


class ProcessVm(ChildVm):
    vmm_name = "the app's process"

    def __init__(self, spec: VmSpec, proc: subprocess.Popen[bytes], control: socket.socket,
                 scratch: Path, on_console: Callable[[str], None] | None = None) -> None:
        super().__init__(spec, proc, on_console, spec.workdir)
        self._channel = control
        self._scratch = scratch
        self._start()

    def _open_control(self) -> socket.socket | None:
        return self._channel

    def _release(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
