"""What every test session gets: its own krait cache, state and uv cache.

Nothing is shared with earlier runs or with the user's own krait, except the kernel
build (built once per machine by `make kernel`; the session's KRAIT_KERNEL_CACHE) and the
kernel's compressed copies, which take minutes to make.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Callable, Generator, Iterator
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


# Logs a test registers (a VM's console, a serve's log), shown in its report if it fails:
# one place that dumps them, as Firecracker's tests/conftest.py does.
_FAILURE_LOGS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()


@pytest.fixture
def show_on_failure(request: pytest.FixtureRequest) -> Callable[[str, Callable[[], str]], None]:
    """``show_on_failure(title, read)``: if the test fails, its report gets a section
    ``title`` with what ``read()`` returns then."""
    logs = request.node.stash.setdefault(_FAILURE_LOGS, [])
    return lambda title, read: logs.append((title, read))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for title, read in item.stash.get(_FAILURE_LOGS, []):
            try:
                text = read()
            except Exception as e:  # a log that is gone: say so, keep the report
                text = f"(could not read it: {e})"
            report.sections.append((title, text))
    return report
