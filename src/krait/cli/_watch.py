"""`krait run --target process --watch DIR`: rebuild the image when the app's source
changes, and restart its process; Ctrl-C ends it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape

from krait.cli._output import err_console
from krait.config import load_app
from krait.errors import KraitError
from krait.image.build import build_image
from krait.kernel import Kernel
from krait.vmm.base import Vm

# What an edit touches; build outputs, caches and hidden files are not the app's source.
_SKIPPED = {"__pycache__", ".venv", "node_modules"}


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


def _stop(vm: Vm, grace: float = 10) -> None:
    vm.request_stop()
    if vm.wait(grace) is None:
        vm.kill()
        vm.wait()


def watch(folder: Path, image: Path, kernel: Kernel, start: Callable[[], Vm],
          poll: float = 0.2) -> int:
    """Run, and on each change of ``folder`` rebuild ``image`` and run again (a build
    that fails keeps the last one running). Returns when the user stops it."""
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    seen, vm, ended = sources(folder), start(), False
    try:
        while not stopping:
            result = vm.wait(poll)
            if result is not None and not ended:
                ended = True
                err_console.print(f"krait: {result.reason}; waiting for a change")
            now = sources(folder)
            if now == seen:
                continue
            seen = now
            started = time.monotonic()
            try:
                build_image(load_app(folder), kernel, image)
            except KraitError as e:
                err_console.print(f"[bold red]krait: the rebuild failed:[/] {escape(e.message)}"
                                  "; the last build keeps running")
                continue
            _stop(vm)
            vm, ended = start(), False
            err_console.print(f"krait: rebuilt and restarted in "
                              f"{time.monotonic() - started:.2f}s")
    finally:
        _stop(vm)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
