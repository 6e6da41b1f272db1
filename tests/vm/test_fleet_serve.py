"""`krait serve` with real VMs: one boot for a burst of cold connections, scale to zero,
snapshot wake, replace under load, a VM dying mid-request, an image that cannot boot,
and nothing left running afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from krait.fleet.serving import ServeChild, serving
from krait.vmm.ports import free_port

from .conftest import Build, MakeApp, krait_cli
from .fleet_support import private_state, wait_for

pytestmark = pytest.mark.vm
ServeFactory = Callable[..., ServeChild]  # serve(image, *args): a running krait serve

SLOW_APP = """
    import asyncio, os

    if os.environ.get("CRASH_AT_BOOT"):
        raise RuntimeError("this app refuses to start")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(60)
        body = b"ok\\n"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with private_state(monkeypatch) as path:
        yield path


@pytest.fixture
def serve(tmp_path: Path, state: Path, show_on_failure: Callable[[str, Callable[[], str]], None]
          ) -> Iterator[ServeFactory]:
    """Start `krait serve`s; stopped before `state` looks for leftovers. Each test's
    serves have a cache of their own: no snapshot saved by an earlier test or run. Their
    logs are in the report of a test that fails."""
    started: list[ServeChild] = []
    with contextlib.ExitStack() as stack:

        def start(image: Path, *args: str) -> ServeChild:
            port = free_port()
            s = stack.enter_context(serving(
                image, port, tmp_path / f"serve-{len(started)}.log", *args, name=f"t{port}",
                env={"KRAIT_CACHE": str(tmp_path / "serve-cache")}))
            show_on_failure(f"krait serve log ({s.name})", s.text)
            started.append(s)
            return s

        yield start
        for s in started:
            s.stop()


def get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def instances() -> list[dict[str, Any]]:
    proc = krait_cli("ps", "--json")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def test_cold_start_scale_to_zero_snapshot_wake(hello_image: Path, serve: ServeFactory,
                                                state: Path) -> None:
    s = serve(hello_image, "--idle", "2s", "--max", "2")
    assert instances() == []  # nothing runs before the first connection
    control = state / "serve" / f"{s.name}.sock"  # it takes commands: ours alone
    assert control.stat().st_mode & 0o777 == 0o600
    assert control.parent.stat().st_mode & 0o777 == 0o700
    results: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(get(s.url())))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [status for status, _ in results] == [200] * 8
    assert all(body.startswith(b"Hello from a krait unikernel") for _, body in results)
    stats = s.status()["stats"]
    assert stats["boots"] == 1, stats  # eight held connections, one boot
    (listed,) = instances()
    assert listed["owner"] == "serve" and listed["state"] == "running"

    wait_for(lambda: instances() == [], 30, "scale to zero")
    assert s.status()["stats"]["stops"] == 1

    status, body = get(s.url())  # wakes from the snapshot saved after the first boot
    assert status == 200 and body.startswith(b"Hello from a krait unikernel")
    stats = s.status()["stats"]
    # The first instance booted cold as the template (its own cache: no earlier
    # snapshot) and then ran as the first clone; the second woke from that snapshot.
    assert stats["boots"] == 2 and stats["wakes"] == 2, stats
    assert s.text().count("saved snapshot") == 1
    assert f"{s.name}-2 woke from a snapshot" in s.text()

    assert s.stop() == 0
    assert instances() == []
    assert not (state / "serve" / f"{s.name}.json").exists()


def test_replace_under_continuous_requests(hello_image: Path, serve: ServeFactory, tmp_path: Path,
                                           build: Build) -> None:
    app = tmp_path / "hello2"
    shutil.copytree(Path(__file__).parents[2] / "examples" / "hello", app,
                    ignore=shutil.ignore_patterns("*.krait", "__pycache__"))
    config = app / "pyproject.toml"
    config.write_text(config.read_text().replace("Hello from a krait unikernel",
                                                 "Hello from the replacement"))
    new_image = build(app)
    s = serve(hello_image, "--idle", "60s", "--no-snapshot")
    assert get(s.url())[0] == 200

    results: list[tuple[float, int, bytes]] = []
    failures: list[str] = []
    running = threading.Event()
    running.set()

    def client() -> None:
        while running.is_set():
            try:
                status, body = get(s.url(), timeout=30)
                results.append((time.monotonic(), status, body))
            except OSError as e:
                failures.append(repr(e))

    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        time.sleep(1)
        replaced = krait_cli("replace", s.name, new_image)
        assert replaced.returncode == 0, replaced.stderr
        wait_for(lambda: any(b"replacement" in b for _, _, b in results), 60, "new image")
        wait_for(lambda: [i["image"] for i in instances()] == [str(new_image)], 30,
                 "old instance stopped")
        time.sleep(1)
    finally:
        running.clear()
        for c in clients:
            c.join(60)
    assert failures == []
    assert [st for _, st, _ in results if st != 200] == []
    bodies = [b for _, _, b in results]
    first_new = next(i for i, b in enumerate(bodies) if b"replacement" in b)
    assert first_new > 0 and b"krait unikernel" in bodies[0]
    assert b"replacement" in bodies[-1]
    stats = s.status()["stats"]
    assert stats["boots"] == 2 and stats["upstream_errors"] == 0 and stats["rejected"] == 0


def test_serve_with_verify_refuses_an_unsigned_replacement(hello_image: Path, serve: ServeFactory,
                                                          tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    assert krait_cli("keygen", key).returncode == 0
    app = tmp_path / "signed-hello"
    shutil.copytree(Path(__file__).parents[2] / "examples" / "hello", app,
                    ignore=shutil.ignore_patterns("*.krait", "__pycache__"))
    built = krait_cli("build", app, "--sign", key, "-q")
    assert built.returncode == 0, built.stderr
    s = serve(Path(built.stdout.strip()), "--verify", f"{key}.pub", "--no-snapshot")
    assert get(s.url())[0] == 200
    replaced = krait_cli("replace", s.name, hello_image)  # built by make: not signed
    assert replaced.returncode == 1 and "not signed" in replaced.stderr, replaced.stderr
    assert get(s.url())[0] == 200
    assert s.status()["generation"] == 1


def test_vm_dies_mid_request_then_boot_fails_fast(make_app: MakeApp, build: Build,
                                                  serve: ServeFactory) -> None:
    image = build(make_app(SLOW_APP, kind="asgi", entry="app:app", extra="ports = [8080]\n"))
    s = serve(image, "--no-snapshot")
    assert get(s.url()) == (200, b"ok\n")
    outcome: list[Any] = []
    slow = threading.Thread(target=lambda: outcome.append(get(s.url("/slow"))))
    slow.start()
    wait_for(lambda: any(i["connections"] for i in s.status()["instances"]), 30,
             "the slow request in flight")
    (victim,) = instances()
    os.kill(victim["pid"], signal.SIGKILL)
    slow.join(30)
    assert outcome and outcome[0][0] == 502, outcome  # a clean error, not a hang
    assert b"before answering" in outcome[0][1]
    assert "died before answering" in s.text()  # what happened: in the log, not the body
    assert get(s.url()) == (200, b"ok\n")  # the next request boots a new instance
    assert s.status()["stats"]["boots"] == 2
    s.stop()

    broken = serve(image, "--no-snapshot", "-e", "CRASH_AT_BOOT=1")
    status, body = get(broken.url())
    assert status == 503 and b"failed to start" in body and b"crash" not in body, body
    assert get(broken.url())[0] == 503  # within the back-off: no new boot
    assert broken.status()["stats"]["boots"] == 1
    assert "failed to start" in broken.text() and "crashed" in broken.text()


def test_port_taken_and_stop_during_boot(hello_image: Path, serve: ServeFactory,
                                         state: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = krait_cli("serve", hello_image, "--port", port, timeout=30)
    assert proc.returncode != 0
    assert "cannot listen" in proc.stderr

    s = serve(hello_image, "--no-snapshot")
    def request() -> None:
        with contextlib.suppress(OSError):  # cut when serve stops: expected
            get(s.url(), timeout=30)

    threading.Thread(target=request, daemon=True).start()
    wait_for(lambda: instances(), 10, "a boot in progress")
    assert s.stop() == 0  # Ctrl-C in the middle of a cold boot
    assert instances() == []


def test_a_clone_wakes_with_the_check_requests_answered(make_app: MakeApp, build: Build,
                                                        serve: ServeFactory) -> None:
    """The snapshot is saved after its template answered the image's check requests: the
    app's first-request work is done in every clone (here, a count of what it answered)."""
    image = build(make_app("""
        answered = []

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            answered.append(scope["path"])
            body = ",".join(answered).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
    """, kind="asgi", entry="app:app", name="warm",
        extra='ports = [8080]\ncheck = ["GET /warm", "GET /up"]\n'))
    s = serve(image, "--idle", "1s")  # prewarmed: the snapshot is made before it listens
    assert get(s.url("/first"))[1] == b"/warm,/up,/first"
    assert s.status()["stats"]["wakes"] == 1


def test_snapshot_wake_sets_the_guest_clock(make_app: MakeApp, build: Build,
                                            serve: ServeFactory) -> None:
    image = build(make_app("""
        import time

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            body = repr(time.time()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
    """, kind="asgi", entry="app:app", name="clock", extra="ports = [8080]\n"))
    s = serve(image, "--idle", "1s")
    assert get(s.url())[0] == 200  # boots, and saves the snapshot
    wait_for(lambda: instances() == [], 30, "scale to zero")
    time.sleep(3)  # the snapshot's clock is now well behind
    before = time.time()
    status, body = get(s.url())
    after = time.time()
    assert status == 200 and s.status()["stats"]["wakes"] == 2  # template, then a clone
    assert f"{s.name}-2 woke from a snapshot" in s.text()
    assert before - 1 <= float(body) <= after + 1, (before, float(body), after)


def test_scale_out_to_two_instances_and_reload_on_sighup(make_app: MakeApp, build: Build,
                                                         serve: ServeFactory,
                                                         tmp_path: Path) -> None:
    folder = make_app(SLOW_APP.replace('b"ok\\n"', 'b"one\\n"'), kind="asgi",
                      entry="app:app", extra="ports = [8080]\n")
    image = tmp_path / "served.krait"
    shutil.copy(build(folder), image)
    s = serve(image, "--no-snapshot", "--max", "2", "--per-instance", "1")
    assert get(s.url()) == (200, b"one\n")

    def held() -> None:
        with contextlib.suppress(OSError):  # cut when the serve stops: expected
            get(s.url("/slow"), timeout=90)

    for _ in range(2):
        threading.Thread(target=held, daemon=True).start()
    wait_for(lambda: len([i for i in instances() if i["state"] == "running"]) == 2, 90,
             "a second instance for the second held request")
    assert s.status()["stats"]["boots"] == 2

    # SIGHUP: the same path, rebuilt, is served from the next connection on.
    (folder / "app.py").write_text((folder / "app.py").read_text().replace("one", "two"))
    shutil.copy(build(folder), tmp_path / "next.krait")
    os.replace(tmp_path / "next.krait", image)
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: get(s.url()) == (200, b"two\n"), 90, "the reloaded image")
    assert s.stop() == 0
    assert instances() == []


READER_APP = """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = open("/data/greeting.txt", "rb").read()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


def test_serve_shares_a_read_only_volume_and_refuses_a_writable_one(
        make_app: MakeApp, build: Build, serve: ServeFactory, tmp_path: Path) -> None:
    image = build(make_app(READER_APP, kind="asgi", entry="app:app",
                           extra='ports = [8080]\nvolumes = ["/data"]\n'))
    content = tmp_path / "content"
    content.mkdir()
    (content / "greeting.txt").write_text("from a volume\n")
    data = tmp_path / "data.img"
    made = krait_cli("volume", "create", data, "--size", "16M", "--from", content)
    assert made.returncode == 0, made.stderr
    writable = krait_cli("serve", image, "--port", str(free_port()), "--volume",
                         f"{data}:/data")
    assert writable.returncode == 1 and "one VM's at a time" in writable.stderr
    missing = krait_cli("serve", image, "--port", str(free_port()))
    assert missing.returncode == 1 and "expects a volume at /data" in missing.stderr
    s = serve(image, "--volume", f"{data}:/data:ro", "--max", "2", "--per-instance", "1")
    assert get(s.url()) == (200, b"from a volume\n")


def test_a_websocket_through_serve(wild_image: Callable[[str], Path], serve: ServeFactory) -> None:
    from .test_apps_from_the_wild import echo_session

    s = serve(wild_image("fastapi_ws"), "--no-snapshot")
    heard = asyncio.run(echo_session(f"ws://127.0.0.1:{s.port}/ws"))  # boots it, cold
    assert heard == ["echo: hello", b"\x03\x02\x01", (4000, "bye to you")]
    assert s.status()["instances"], s.text()
