"""What every test session gets: its own krait cache, state and uv cache.

Nothing is shared with earlier runs or with the user's own krait, except the kernel
build (built once per machine by `make kernel`, read-only to the tests) and the kernel's
compressed copy, which take minutes to make.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from krait.image._scan import parse_python
from krait.paths import cache_dir

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
    shared = cache_dir()  # the machine's cache, as `make kernel` filled it
    root = tmp_path_factory.mktemp("krait-session")
    cache = root / "cache"
    (cache / "objects").mkdir(parents=True)
    for part in ("kernel", "objects/kernel"):
        (shared / part).mkdir(parents=True, exist_ok=True)
        (cache / part).symlink_to(shared / part)
    saved = {k: os.environ.get(k) for k in ("KRAIT_CACHE", "KRAIT_STATE", "UV_CACHE_DIR")}
    os.environ["KRAIT_CACHE"] = str(cache)
    os.environ["KRAIT_STATE"] = str(root / "state")
    os.environ["UV_CACHE_DIR"] = str(root / "uv")
    try:
        yield cache
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
