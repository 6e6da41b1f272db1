"""A VM in the foreground (`krait run`): its console shown, Ctrl-C a graceful stop and a
second one a hard stop, its end always waited for; and the edit-run loop (`--watch`)
that rebuilds the image when the app's source changes and starts it again."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from krait.errors import KraitError
from krait.kernel import Kernel
from krait.vmm.base import Vm, VmResult

Tell = Callable[[str], None]
# What an edit touches; build outputs, caches and hidden files are not the app's source.
_SKIPPED = {"__pycache__", ".venv", "node_modules"}


@contextlib.contextmanager
def _signals(handler: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``handler`` while the block runs."""
    def on_signal(signum: int, frame: Any) -> None:
        handler()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def run_in_foreground(vm: Vm, tell: Tell) -> VmResult:
    """Until ``vm`` ends: the first Ctrl-C (or SIGTERM) asks the guest to stop, the
    second stops it hard. The VM never outlives this call."""
    stops = 0

    def stop() -> None:
        nonlocal stops
        stops += 1
        if stops == 1:
            tell("stopping (again to force)")
            vm.request_stop()
        else:
            vm.kill()

    try:
        with _signals(stop):
            result = None
            while result is None:
                result = vm.wait(0.2)
            return result
    finally:
        vm.kill()


def sources(folder: Path) -> dict[Path, int]:
    """Every file of the app folder with its mtime, as the build would see it."""
    found = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).parts
        if any(p.startswith(".") or p in _SKIPPED for p in rel) or path.suffix == ".krait":
            continue
        if path.is_file():
            found[path] = path.stat().st_mtime_ns
    return found


def watch(folder: Path, image: Path, kernel: Kernel, start: Callable[[], Vm], tell: Tell,
          poll: float = 0.2) -> int:
    """Run, and on each change of ``folder`` rebuild ``image`` and run again (a build
    that fails keeps the last one running). Returns when the user stops it."""
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True

    seen, vm, ended = sources(folder), start(), False
    try:
        with _signals(stop):
            while not stopping:
                result = vm.wait(poll)
                if result is not None and not ended:
                    ended = True
                    tell(f"{result.reason}; waiting for a change")
                now = sources(folder)
                if now == seen:
                    continue
                seen = now
                started = time.monotonic()
                try:
                    # Here, not at the top: a plain `krait run` builds nothing.
                    from krait.config import load_app
                    from krait.image.build import build_image

                    build_image(load_app(folder), kernel, image)
                except KraitError as e:
                    tell(f"the rebuild failed: {e.message}; the last build keeps running")
                    continue
                vm.stop()
                vm, ended = start(), False
                tell(f"rebuilt and restarted in {time.monotonic() - started:.2f}s")
    finally:
        vm.stop()
    return 0
