"""Rebuild times with a warm cache: one line of the app changed; one dependency added."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from krait.bench.result import Result, summarize
from krait.config import AppConfig, load_app
from krait.image.build import build_image
from krait.image.environment import default_base_python
from krait.image.lock import REQUIREMENTS_FILE, declared_dependencies, find_uv, uv_env
from krait.kernel import Kernel
from krait.run import run

# Small pure-Python packages, a different one for each run: every timed build resolves
# the lock again and makes an environment it has never seen (uv's wheel cache is warm).
SMALL_DEPENDENCIES = ("six", "idna", "cachetools", "toolz", "tomli", "itsdangerous",
                      "blinker", "pyparsing", "wrapt", "decorator")


def bench_rebuild(app_dir: Path, kernel: Kernel, accel: str, runs: int = 5,
                  dependency_runs: int | None = None) -> Result:
    """App-only rebuilds (the samples) and one-dependency-added rebuilds (in ``extra``)."""
    app_dir = app_dir.resolve()
    dependency_runs = runs if dependency_runs is None else dependency_runs
    if dependency_runs > len(SMALL_DEPENDENCIES):
        raise ValueError(f"at most {len(SMALL_DEPENDENCIES)} dependency runs")
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
        added = SMALL_DEPENDENCIES[:dependency_runs]
        run([find_uv(), "pip", "install", "--quiet", "--target", Path(tmp) / "warm",
             "--python", default_base_python(), *added], env=uv_env(), timeout=600)
        dependency_samples = []
        for name in added:
            with _declaring(copy, name) as with_dep:
                started = time.perf_counter()
                build_image(with_dep, kernel, copy / "out.krait")
                dependency_samples.append(round(time.perf_counter() - started, 4))
    return Result("app-only-rebuild", "s", samples, accel, params={"app": str(app_dir)},
                  extra={"cached_layers": cached,
                         "one_dependency_added": {
                             "unit": "s", "samples": dependency_samples,
                             "dependencies": list(added),
                             "what": "declare one more small pure-Python package, then "
                                     "`krait build`: the lock resolved again (other pins "
                                     "kept), a new environment, the packages layer rebuilt; "
                                     "uv's wheel cache warm",
                             **_summary(dependency_samples)}})


def _summary(samples: list[float]) -> dict[str, float]:
    return summarize(samples) if samples else {}


@contextlib.contextmanager
def _declaring(folder: Path, name: str) -> Iterator[AppConfig]:
    """The app in ``folder`` declaring one more dependency, where its user would add it."""
    app = load_app(folder)
    if declared_dependencies(app).file is None:
        yield load_app(folder, {"dependencies": [*app.dependencies, name]})
        return
    requirements = folder / REQUIREMENTS_FILE
    before = requirements.read_text()
    requirements.write_text(f"{before}\n{name}\n")
    try:
        yield load_app(folder)
    finally:
        requirements.write_text(before)
