"""Fixtures for tests that boot real images under QEMU (TCG here).

Lifecycle as in Firecracker's test framework: ``kernel`` (built once, cached) ->
``build`` (an image from a small app) -> ``booted`` (a VM answering, always
stopped at the end, its console dumped if the test failed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel, build_kernel

pytestmark = pytest.mark.vm
MakeApp = Callable[..., Path]  # make_app(source, kind=..., name=..., **settings) -> folder
Build = Callable[[Path], Path]  # build(folder) -> image
ROOT = Path(__file__).resolve().parents[2]
KRAIT = [sys.executable, "-m", "krait.cli"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail("qemu-system-x86_64 is not installed (run `make deps`)")
    return build_kernel()


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    """Write a small app folder: make_app(source, kind=..., name=..., **settings)."""

    def make(source: str, kind: str = "main", name: str = "t", entry: str = "app:main",
             extra: str = "") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "app.py").write_text(textwrap.dedent(source))
        (folder / "krait.toml").write_text(
            f'name = "{name}"\nentry = "{entry}"\nkind = "{kind}"\n{extra}')
        return folder

    return make


@pytest.fixture
def build(kernel: Kernel) -> Callable[[Path], Path]:
    def do(folder: Path) -> Path:
        return build_image(load_app(folder), kernel).path

    return do


def krait_cli(*args: str | os.PathLike[str], timeout: float = 120,
              ) -> subprocess.CompletedProcess[str]:
    """Run the real `krait` command line, as a user would. One that runs over its time is
    stopped as a user would stop it (SIGTERM: krait stops its VM), never killed outright,
    which would leave its QEMU behind; then the test fails."""
    argv = [*KRAIT, *map(str, args)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"`krait {' '.join(map(str, args))}` ran over {timeout}s:\n{out}{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@contextlib.contextmanager
def krait_running(*args: str | int | os.PathLike[str]) -> Iterator[subprocess.Popen[str]]:
    """The real `krait ARGS` running while the block runs (ctrl_c() stops it as a user
    would). One still running at the end (a test that failed) is stopped with SIGTERM,
    as krait_cli() does, and killed only if it will not stop."""
    proc = subprocess.Popen([*KRAIT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def ctrl_c(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Ctrl-C on a krait_running(); what it printed (stdout, stderr) once it ended."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return out, err


@pytest.fixture(scope="session")
def hello_image(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hello") / "hello.krait"
    return build_image(load_app(ROOT / "examples" / "hello"), kernel, out).path


@pytest.fixture
def no_leftover_qemu() -> Iterator[None]:
    """Fail if a test leaves a QEMU it started running."""
    import psutil

    def ours() -> set[int]:
        return {p.pid for p in psutil.process_iter(["name", "cmdline"])
                if "qemu-system" in (p.info["name"] or "")
                and any("krait" in a for a in (p.info["cmdline"] or []))}

    before = ours()
    yield
    import time

    deadline = time.monotonic() + 10
    while (left := ours() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"QEMU processes left running: {left}"


@pytest.fixture(scope="session")
def libvirt_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A libvirtd of the session's own (see _hosts); its storage pool in a fresh folder."""
    from krait.vmm.libvirt import POOL_ENV
    from tests.vm._hosts import libvirtd_running, pool_folder

    pool = pool_folder()
    os.environ[POOL_ENV] = str(pool)
    try:
        with libvirtd_running(tmp_path_factory.mktemp("libvirtd")) as uri:
            yield uri
    finally:
        os.environ.pop(POOL_ENV, None)
        shutil.rmtree(pool, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_libvirt_uri(libvirt_uri: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[str]:
    """The same libvirtd as another host would be reached: qemu+ssh through an sshd."""
    from tests.vm._hosts import ssh_uri, sshd_running

    socket_path = libvirt_uri.partition("socket=")[2]
    with sshd_running(tmp_path_factory.mktemp("sshd")) as (port, ssh):
        yield ssh_uri(port, ssh, socket_path)


@pytest.fixture
def no_domains_left(libvirt_uri: str) -> Iterator[None]:
    """Fail if a test leaves a libvirt domain running (and end it)."""
    import libvirt

    def running() -> list[str]:
        conn = libvirt.open(libvirt_uri)
        try:
            return [d.name() for d in conn.listAllDomains()]
        finally:
            conn.close()

    yield
    import time

    deadline = time.monotonic() + 10
    while (left := running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        conn = libvirt.open(libvirt_uri)
        for name in left:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
        conn.close()
    assert not left, f"domains left running: {left}"


# Apps written without krait in mind (tests/apps): each built once per session, from a bare
# copy, with the build's own check, and shared by the tests that boot it.
_WILD: dict[str, Path] = {}


@pytest.fixture(scope="session")
def wild_image(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory
               ) -> Callable[[str], Path]:
    from krait.vmm.check import build_checked
    from tests.vm._examples import TEST_APPS, bare_copy

    def get(name: str) -> Path:
        if name not in _WILD:
            folder = bare_copy(TEST_APPS / name, tmp_path_factory.mktemp(name))
            text = (folder / "pyproject.toml").read_text()
            # As their authors wrote them: nothing that names modules or files for krait.
            assert "modules" not in text and "include" not in text
            _WILD[name] = build_checked(load_app(folder), kernel).path
        return _WILD[name]

    return get
