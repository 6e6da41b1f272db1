"""App-only rebuild time with a warm cache: change one line, build again."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from krait.bench.result import Result
from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel


def bench_rebuild(app_dir: Path, kernel: Kernel, accel: str, runs: int = 5) -> Result:
    app_dir = app_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="krait-rebuild-") as tmp:
        copy = Path(tmp) / app_dir.name
        shutil.copytree(app_dir, copy, ignore=shutil.ignore_patterns("*.krait", ".venv"))
        app = load_app(copy)
        build_image(app, kernel, copy / "out.krait")  # warm the cache
        source = copy / (app.module.replace(".", "/") + ".py")
        samples, cached = [], []
        for i in range(runs):
            with source.open("a") as f:
                f.write(f"\n# edit {i}\n")
            started = time.perf_counter()
            result = build_image(app, kernel, copy / "out.krait")
            samples.append(round(time.perf_counter() - started, 4))
            cached.append(result.cached_layers)
    return Result("app-only-rebuild", "s", samples, accel, params={"app": str(app_dir)},
                  extra={"cached_layers": cached})
