"""One lifecycle for every VM a benchmark or a test starts: boot, wait, use, always stop.

    with booted(image) as vm:          # ports picked, ready signal awaited
        first_answer(vm.url("/"), ...)  # the VM answers
    # stopped (gracefully, then hard), whatever happened in the block; if the block
    # failed and on_failure is given, it got the end of the guest console first
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from krait.errors import VmError
from krait.image.archive import Image, open_image
from krait.vmm.backends import get_backend
from krait.vmm.base import Backend, Vm, VmSpec
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.ports import free_port


@dataclass
class Booted:
    vm: Vm
    spec: VmSpec
    image: Image
    ports: dict[int, int]  # guest port -> host port on 127.0.0.1
    started: float  # time.monotonic() when QEMU was started
    ready: float  # ... when the guest said it was ready
    lines: list[str] = field(default_factory=list)  # the console so far

    @property
    def port(self) -> int:
        """The host port of the app's first port."""
        return next(iter(self.ports.values()))

    def url(self, path: str = "/", guest_port: int | None = None, scheme: str = "http") -> str:
        port = self.ports[guest_port] if guest_port else self.port
        return f"{scheme}://127.0.0.1:{port}{path}"


@contextlib.contextmanager
def booted(image: Path | Image, *, guest_ports: tuple[int, ...] | None = None,
           host_ports: dict[int, int] | None = None, memory: int | None = None,
           env: dict[str, str] | None = None, connect: tuple[str, ...] = (),
           volumes: tuple[str, ...] = (), backend: Backend | None = None,
           check_memory: bool = True, ready_timeout: float = 120.0, stop_grace: float = 10.0,
           on_failure: Callable[[str], None] | None = None, profile: bool = False
           ) -> Iterator[Booted]:
    """Boot ``image`` with each guest port forwarded to a free host port and yield once
    the guest says it is ready (``host_ports`` maps a guest port to a host port chosen
    by the caller); stop it when the block ends. A boot that fails is a VmError with the
    reason and the end of the console."""
    img = image if isinstance(image, Image) else open_image(image)
    wanted = guest_ports or img.manifest.ports or (img.manifest.first_port,)
    ports = {g: (host_ports or {}).get(g) or free_port() for g in wanted}
    options = RunOptions(ports=tuple(PortForward(h, g) for g, h in ports.items()),
                         memory=memory, env=dict(env or {}), connect=connect, volumes=volumes,
                         check_memory=check_memory, profile=profile)
    _, spec = prepare(img.path, options, image=img)
    lines: list[str] = []
    started = time.monotonic()
    vm = (backend or get_backend()).start(spec, on_console=lines.append)
    try:
        if not vm.wait_ready(ready_timeout):
            vm.kill()
            ended = vm.wait(10)
            reason = ended.reason if ended else f"not ready in {ready_timeout:g}s"
            tail = "\n".join(lines[-15:])
            raise VmError(f"{img.name} did not become ready: {reason}\n{tail}".rstrip())
        yield Booted(vm, spec, img, ports, started, vm.ready_at or time.monotonic(), lines)
    except BaseException:
        if on_failure:
            on_failure("--- guest console ---\n" + "\n".join(lines[-60:]))
        raise
    finally:
        vm.stop(stop_grace)
