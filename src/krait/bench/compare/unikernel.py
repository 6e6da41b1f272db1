"""The krait unikernel: the same payload built into NAME.krait, booted by krait's QEMU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

from krait.bench.compare._common import tree_mb
from krait.bench.compare.base import Running, Variant
from krait.bench.compare.surface import surface_of_image
from krait.image.archive import open_image
from krait.image.build import build_image
from krait.kernel import Kernel, build_kernel
from krait.vmm.backends import get_backend
from krait.vmm.base import Vm
from krait.vmm.booted import booted
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward


class _Vm(Running):
    def __init__(self, vm: Vm) -> None:
        assert vm.pid is not None  # QEMU, started by krait: a process of this machine's
        self.pid = vm.pid

    def host_pss_mb(self) -> float:
        return tree_mb(self.pid, "pss")


class UnikernelVariant(Variant):
    name = "unikernel"
    label = "krait unikernel"
    kernel: Kernel | None = None

    def prepare(self) -> None:
        kernel = self.kernel or build_kernel()
        self.image_path = self.payload.parent / f"{self.app.name}.krait"
        build_image(self.payload_app, kernel, self.image_path)
        self.image = open_image(self.image_path)
        _, spec = prepare(self.image_path, self._options(8080), image=self.image)
        argv = get_backend("qemu").command(replace(spec, workdir=self.payload.parent))
        self.details = {"machine": "microvm", "kernel": self.image.manifest.kernel_identity.version,
                        "cmdline": " ".join(spec.cmdline), "qemu_argv": argv,
                        "image": str(self.image_path)}

    def _options(self, port: int) -> RunOptions:
        return RunOptions(ports=(PortForward(port, self.app.ports[0]),),
                          memory=self.settings.memory_mib, accel=self.settings.accel)

    def artifact_bytes(self) -> int:
        return self.image_path.stat().st_size

    def surface(self) -> dict[str, int | None]:
        return surface_of_image(self.image)

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        def keep_console(tail: str) -> None:
            self.details["console_tail"] = tail.splitlines()[-30:]

        guest = self.app.ports[0]
        with booted(self.image, guest_ports=(guest,), host_ports={guest: port},
                    memory=self.settings.memory_mib, ready_timeout=self.settings.boot_timeout,
                    on_failure=keep_console) as vm:
            yield _Vm(vm.vm)
