"""The tiers an instance of `krait serve` goes through, with real VMs: a cold boot, a
snapshot wake, a resume from pause. The same assertions hold for each (Firecracker's
uvm_booted / uvm_restored), each with a cache folder of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krait.fleet.driver import ImageRef, VmDriver
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.paths import cache_dir
from krait.vmm.launch import RunOptions

from .._echo import echo_server
from .conftest import Build, MakeApp
from .fleet_support import private_state

pytestmark = pytest.mark.vm

# Answers with fresh randomness from the kernel and from Python's random, and the time.
ENTROPY_APP = """
    import json, os, random, time

    SEEDED = random.random()  # the generator's state is in the snapshot

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps({"urandom": os.urandom(16).hex(), "random": random.random(),
                           "time": time.time(), "pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache (snapshots) and state folder of this test's own; the kernel is shared (the
    session's KRAIT_KERNEL_CACHE, and its compressed copies copied in)."""
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir() / "objects" / "kernel", cache / "objects" / "kernel")
    monkeypatch.setenv("KRAIT_CACHE", str(cache))
    with private_state(monkeypatch):
        yield cache


async def ask(port: int, path: str = "/") -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    answer: dict[str, Any] = json.loads(body)
    return answer


async def tier(image: Path, how: str) -> tuple[dict[str, Any], Gateway]:
    """One answer from an instance reached the way ``how`` says."""
    driver = VmDriver(RunOptions(), use_snapshots=how != "cold")
    policy = ScalePolicy(idle_seconds=3600, pause_seconds=0.5 if how == "paused" else None)
    async with Gateway(driver, ImageRef.open(image, 1), policy, "tier", port=0) as gateway:
        await ask(gateway.port)  # cold boot (for "snapshot": saves it, wakes a clone)
        if how == "snapshot":
            inst = next(iter(gateway.instances.values()))
            await gateway._stop(inst)  # scale to zero: the next one wakes from the snapshot
        elif how == "paused":
            deadline = time.monotonic() + 20
            while gateway.stats.pauses == 0:
                assert time.monotonic() < deadline, "the instance was never paused"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # its clock stands still meanwhile
        answer = await ask(gateway.port)
        return answer, gateway


@pytest.mark.parametrize("how", ["cold", "snapshot", "paused"])
def test_every_tier_answers_with_the_right_time(make_app: MakeApp, build: Build, fresh: Path,
                                                how: str) -> None:
    image = build(make_app(ENTROPY_APP, kind="asgi", entry="app:app", name="entropy",
                           extra="ports = [8080]\n"))
    before = time.time()
    answer, gateway = asyncio.run(tier(image, how))
    after = time.time()
    assert answer["pid"] > 1  # the app, in PID 1's child
    assert before - 1 <= answer["time"] <= after + 1, (before, answer["time"], after)
    stats = gateway.stats
    if how == "cold":
        assert (stats.boots, stats.wakes, stats.resumes) == (1, 0, 0)
    elif how == "snapshot":
        assert stats.wakes == 2  # the first boot serves as a clone of its own snapshot too
        assert list((fresh / "snapshots").glob("*.state"))
    else:
        assert (stats.pauses, stats.resumes) == (1, 1)


async def two_clones(image: Path, options: RunOptions) -> list[dict[str, Any]]:
    """The answers of two instances woken from one snapshot (the first makes it)."""
    driver = VmDriver(options, use_snapshots=True)
    ref = ImageRef.open(image, 1)
    handles = [await driver.boot(ref, "clone-a"), await driver.boot(ref, "clone-b")]
    try:
        assert all(h.woke_from_snapshot for h in handles)
        return [await ask(h.address[1]) for h in handles]
    finally:
        for h in handles:
            await driver.stop(h)
        await driver.close()


def test_clones_of_one_snapshot_do_not_share_randomness(make_app: MakeApp, build: Build,
                                                        fresh: Path) -> None:
    image = build(make_app(ENTROPY_APP, kind="asgi", entry="app:app", name="entropy",
                           extra="ports = [8080]\n"))
    a, b = asyncio.run(two_clones(image, RunOptions()))
    assert a["urandom"] != b["urandom"]
    assert a["random"] != b["random"]


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def one_byte_of_memory(path: Path) -> None:
    """What QEMU itself would load without a word: the guest's RAM, changed in place."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xcc")


@pytest.mark.parametrize("suffix, change", [(".state", cut_short),
                                            (".ram", one_byte_of_memory)])
def test_a_changed_snapshot_is_skipped_and_the_instance_boots_cold(
        make_app: MakeApp, build: Build, fresh: Path, suffix: str, change: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    image = build(make_app(ENTROPY_APP, kind="asgi", entry="app:app", name="entropy",
                           extra="ports = [8080]\n"))

    async def run() -> tuple[bool, bool]:
        driver = VmDriver(RunOptions(), use_snapshots=True)
        ref = ImageRef.open(image, 1)
        first = await driver.boot(ref, "first")
        await driver.stop(first)
        [state] = list((fresh / "snapshots").glob("*.state"))
        change(state.with_suffix(suffix))
        second = await driver.boot(ref, "second")
        try:
            answer = await ask(second.address[1])
            return answer["pid"] > 1, second.woke_from_snapshot
        finally:
            await driver.stop(second)
            await driver.close()

    with caplog.at_level(logging.WARNING, "krait.fleet"):
        answered, woke = asyncio.run(run())
    # Caught by its digests, before QEMU saw it; the instance booted cold as a new
    # template and woke from the new snapshot.
    assert "changed since it was made" in caplog.text
    assert answered and woke
    assert len(list((fresh / "snapshots").glob("*.state"))) == 1


# Answers with what its declared service said to a line holding its boot-time secret. The
# service is declared by name (echo=echo.internal:7000): $KRAIT_CONNECT_ECHO says that
# name, which resolves inside the guest, in every clone.
SERVICE_APP = """
    import json, os, socket

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        host, _, port = os.environ["KRAIT_CONNECT_ECHO"].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(("ping " + os.environ["SECRET"]).encode())
            echo = conn.recv(100).decode()
        body = json.dumps({"echo": echo, "pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


def test_clones_reach_their_service_and_each_settings_get_their_own_snapshot(
        make_app: MakeApp, build: Build, fresh: Path) -> None:
    image = build(make_app(SERVICE_APP, kind="asgi", entry="app:app", name="reach",
                           extra='ports = [8080]\nconnect = ["echo=echo.internal:7000"]\n'))

    def clones(secret: str, port: int) -> list[dict[str, Any]]:
        options = RunOptions(env={"SECRET": secret}, connect=(f"echo=127.0.0.1:{port}",))
        return asyncio.run(two_clones(image, options))

    with echo_server() as port:
        first = clones("one", port)
        second = clones("two", port)
    assert [a["echo"] for a in first] == ["PING ONE"] * 2
    assert [a["echo"] for a in second] == ["PING TWO"] * 2  # not the first one's snapshot
    assert len(list((fresh / "snapshots").glob("*.state"))) == 2
