"""What every test session gets: its own krait cache, state and uv cache.

Nothing is shared with earlier runs or with the user's own krait, except the kernel
build (built once per machine by `make kernel`; the session's KRAIT_KERNEL_CACHE) and the
kernel's compressed copies, which take minutes to make.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from krait.image._scan import parse_python
from krait.paths import cache_dir, kernel_cache_dir, krait_dir

# pytest's assertion rewriter parses every test module with ast.parse, which on Debian's
# Python 3.11.2 fails at random with a spurious SystemError (see parse_python).
ast.parse = parse_python  # type: ignore[assignment]

# Property tests: a small budget in `make test`, a large one in `make fuzz`. No example
# database: no state carried over from earlier runs.
# filter_too_much: the request fuzzers discard most inputs by design (seen failing CI).
_QUIET = [HealthCheck.filter_too_much, HealthCheck.too_slow]
settings.register_profile("test", max_examples=60, deadline=None, database=None,
                          suppress_health_check=_QUIET)
settings.register_profile("fuzz", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=_QUIET)
settings.load_profile("fuzz" if os.environ.get("KRAIT_FUZZ") else "test")


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The machine's caches, as `make kernel` filled them. The kernel cache is a root of
    # its own (KRAIT_KERNEL_CACHE): krait follows no symlink out of its folders, so the
    # session's cache cannot link to it. Compressed kernels are copied in, and new ones
    # copied back, so that no session compresses one twice.
    shared, kernels = cache_dir(), kernel_cache_dir()
    compressed = krait_dir(shared, "objects", "kernel")
    root = tmp_path_factory.mktemp("krait-session")
    cache = root / "cache"
    shutil.copytree(compressed, cache / "objects" / "kernel")
    variables = ("KRAIT_CACHE", "KRAIT_KERNEL_CACHE", "KRAIT_STATE", "UV_CACHE_DIR")
    saved = {k: os.environ.get(k) for k in variables}
    os.environ["KRAIT_CACHE"] = str(cache)
    os.environ["KRAIT_KERNEL_CACHE"] = str(kernels)
    os.environ["KRAIT_STATE"] = str(root / "state")
    os.environ["UV_CACHE_DIR"] = str(root / "uv")
    try:
        yield cache
    finally:
        shutil.copytree(cache / "objects" / "kernel", compressed, dirs_exist_ok=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
