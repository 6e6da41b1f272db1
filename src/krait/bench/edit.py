"""``krait bench edit``: from a one-line change of an app to its first answer with the
change, with ``krait run --target process --watch`` and with a rebuild and a full boot."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from krait.bench.apps import probe_app
from krait.bench.http import first_answer
from krait.bench.result import Result, summarize
from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel
from krait.run import popen, terminate
from krait.vmm.booted import booted
from krait.vmm.ports import free_port

# A service whose one line to change is its answer.
APP = '''VERSION = "v0"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = VERSION.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def _edit(folder: Path, version: str) -> float:
    source = folder / "app.py"
    source.write_text(APP.replace('"v0"', f'"{version}"'))
    return time.monotonic()


def bench_edit(kernel: Kernel, accel: str, runs: int = 5) -> Result:
    with tempfile.TemporaryDirectory(prefix="krait-edit-") as tmp:
        folder = Path(tmp) / "edited"
        image = probe_app(folder, APP, 'name = "edited"\nentry = "app:app"\nkind = "asgi"\n'
                          'ports = [8080]\nexclude = ["ssl"]\n', kernel)
        port = free_port()
        watcher = popen([sys.executable, "-m", "krait.cli", "run", str(image), "--target",
                         "process", "-p", f"{port}:8080", "--watch", str(folder)],
                        stdout=subprocess.DEVNULL)
        process = []
        try:
            url = f"http://127.0.0.1:{port}/"
            first_answer(url, time.monotonic() + 60, b"v0")
            for i in range(1, runs + 1):
                edited = _edit(folder, f"p{i}")
                first_answer(url, time.monotonic() + 60, f"p{i}".encode())
                process.append(round(time.monotonic() - edited, 4))
        finally:
            terminate(watcher)
        booted_runs = []
        for i in range(1, runs + 1):
            edited = _edit(folder, f"b{i}")
            build_image(load_app(folder), kernel, image)
            with booted(image) as vm:
                first_answer(vm.url("/"), time.monotonic() + 120, f"b{i}".encode())
                booted_runs.append(round(time.monotonic() - edited, 4))
    return Result("edit-to-first-answer", "s", process, accel,
                  params={"change": "one line of the app's source (its answer)",
                          "process": "krait run --target process --watch (polls every 0.2 s)"},
                  extra={"rebuild_and_boot": {"unit": "s", "samples": booted_runs,
                                              **summarize(booted_runs),
                                              "what": "krait build, then a cold boot to "
                                                      "the first answer with the change"},
                         "boot_over_process_median": round(
                             summarize(booted_runs)["median"]
                             / summarize(process)["median"], 1)})
