"""A real `krait serve` speaking HTTP in front of real instances of a built image, on
the process backend (the app as a host process: no TCG boot, so these run in seconds):
curl's keep-alive requests balanced over instances, a WebSocket held open, metrics
scraped and parsed, the access log, an instance killed mid-request, an app that fails
to start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from krait.fleet.serving import ServeChild, serving
from krait.vmm.ports import free_port

from .fleet_support import private_state, wait_for

pytestmark = pytest.mark.vm
ServeFactory = Callable[..., ServeChild]

APP = """
    import asyncio, os

    if os.environ.get("CRASH_AT_BOOT"):
        raise RuntimeError("this app refuses to start")

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                event = await receive()
                if event["type"] != "websocket.receive":
                    return
                await send({"type": "websocket.send", "text": f"{os.getpid()} {event['text']}"})
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/sleep/"):
            await asyncio.sleep(int(scope["path"].rpartition("/")[2]) / 10)
        body = f"pid={os.getpid()} route={os.environ.get('ROUTE', '')}\\n".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, kernel: object) -> Path:
    from krait.config import load_app
    from krait.image.build import build_image
    from krait.kernel import Kernel

    assert isinstance(kernel, Kernel)
    folder = tmp_path_factory.mktemp("httpapp") / "httpapp"
    folder.mkdir()
    import textwrap

    (folder / "app.py").write_text(textwrap.dedent(APP))
    (folder / "krait.toml").write_text('name = "httpapp"\nentry = "app:app"\nkind = "asgi"\n')
    return build_image(load_app(folder), kernel).path


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          show_on_failure: Callable[[str, Callable[[], str]], None]) -> Iterator[ServeFactory]:
    started: list[ServeChild] = []
    with private_state(monkeypatch), contextlib.ExitStack() as stack:

        def start(image: Path | None, *args: str) -> ServeChild:
            port = free_port()
            s = stack.enter_context(serving(
                image, port, tmp_path / f"serve-{len(started)}.log", "--backend", "process",
                *args, name=f"h{port}", env={"KRAIT_CACHE": os.environ["KRAIT_CACHE"]}))
            show_on_failure(f"krait serve log ({s.name})", s.text)
            started.append(s)
            return s

        yield start
        for s in started:
            s.stop()


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"http://{address}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_keep_alive_balanced_websocket_held_metrics_and_access_log(
        image: Path, serve: ServeFactory) -> None:
    metrics_port = free_port()
    # (The process backend cannot pause: the fake-driver tests check that a WebSocket
    # keeps its instance from pausing.)
    s = serve(image, "--min", "2", "--max", "2", "--idle", "60s", "--pause", "off",
              "--metrics", f"127.0.0.1:{metrics_port}")
    wait_for(lambda: [i["state"] for i in s.status()["instances"]] == ["running"] * 2,
             60, "two instances")
    # While another client holds one instance, curl's keep-alive requests go to the
    # other; once it is free, to either: one connection, both instances.
    holder = threading.Thread(target=get, args=(s.url("/sleep/10"),))
    holder.start()
    time.sleep(0.3)
    proc = subprocess.run(["curl", "-sS", "--http1.1", "-w", " connects=%{num_connects}\n",
                           *[s.url("/sleep/2")] * 12], capture_output=True, text=True,
                          timeout=60, check=True)
    holder.join(30)
    pids = re.findall(r"pid=(\d+)", proc.stdout)
    connects = re.findall(r"connects=(\d+)", proc.stdout)
    assert len(pids) == 12 and sum(map(int, connects)) == 1, proc.stdout  # one connection
    assert len(set(pids)) == 2, pids  # two instances

    async def websocket() -> None:
        async with connect(f"ws://127.0.0.1:{s.port}/ws") as ws:
            await ws.send("hi")
            pid = str(await ws.recv()).split()[0]
            seen = await asyncio.to_thread(scrape, f"127.0.0.1:{metrics_port}")
            assert seen["krait_sessions_open", (("route", s.name),)] == 1
            await ws.send("again")
            assert await ws.recv() == f"{pid} again"

    asyncio.run(websocket())
    seen = scrape(f"127.0.0.1:{metrics_port}")
    route = ("route", s.name)
    assert seen["krait_requests_total", (route, ("status", "200"))] == 13
    assert seen["krait_requests_total", (route, ("status", "101"))] == 1
    assert seen["krait_instances", (route, ("state", "running"))] + seen.get(
        ("krait_instances", (route, ("state", "paused"))), 0) == 2
    assert seen["krait_instance_events_total", (("event", "boots"), route)] == 2
    log = s.text()
    assert log.count('"GET /sleep/2 HTTP/1.1" 200 ') == 12
    assert '"GET /ws HTTP/1.1" 101 ' in log
    info = json.loads((Path(os.environ["KRAIT_STATE"]) / "serve" / f"{s.name}.json")
                      .read_text())
    assert info["protocol"] == "http" and info["metrics"] == f"127.0.0.1:{metrics_port}"


def test_killed_mid_request_is_502_then_served_and_a_failing_app_is_503(
        image: Path, serve: ServeFactory) -> None:
    s = serve(image, "--idle", "60s", "--pause", "off")
    status, body = get(s.url("/"))
    assert status == 200
    pid = int(body.split()[0].split(b"=")[1])
    answers: list[tuple[int, bytes]] = []
    slow = threading.Thread(target=lambda: answers.append(get(s.url("/sleep/50"))))
    slow.start()
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    slow.join(30)
    assert answers and answers[0][0] == 502, answers
    status, body = get(s.url("/"))  # a new instance
    assert status == 200 and int(body.split()[0].split(b"=")[1]) != pid
    assert "died before answering" in s.text()

    broken = serve(image, "--env", "CRASH_AT_BOOT=1")
    status, body = get(broken.url("/"))
    assert status == 503 and b"failed to start" in body
    assert b"refuses to start" not in body  # the reason goes to the log, not the client
    wait_for(lambda: "refuses to start" in broken.text(), 10, "the reason in the log")


def test_prewarm_makes_the_first_request_a_wake_under_qemu(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        show_on_failure: Callable[[str, Callable[[], str]], None]) -> None:
    """A real VM: serve boots the image once before it listens, takes the snapshot and
    keeps nothing running; the first request wakes a clone (and its metrics say so)."""
    with private_state(monkeypatch):
        port, metrics_port = free_port(), free_port()
        with serving(image, port, tmp_path / "serve.log", "--idle", "60s", "--pause", "off",
                     "--metrics", f"127.0.0.1:{metrics_port}", name=f"w{port}",
                     env={"KRAIT_CACHE": str(tmp_path / "cache")}, start_timeout=120) as s:
            show_on_failure("krait serve log", s.text)
            assert "prewarmed" in s.text() and s.text().count("saved snapshot") == 1
            assert s.status()["instances"] == []  # nothing runs until the first request
            status, body = get(s.url("/"))
            assert status == 200 and body.startswith(b"pid=")
            stats = s.status()["stats"]
            assert stats["boots"] == 1 and stats["wakes"] == 1, stats
            seen = scrape(f"127.0.0.1:{metrics_port}")
            assert seen["krait_request_seconds_count", (("route", s.name), ("start", "wake"))] == 1
            assert s.stop() == 0


def test_routes_many_apps_on_one_port_404_and_reload_on_sighup(
        image: Path, serve: ServeFactory, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    route = """
[[route]]
name = "{name}"
{where}
image = "{image}"
env = ["ROUTE={name}"]
pause = "off"
"""
    routes.write_text(route.format(name="a", where='host = "a.test"', image=image)
                      + route.format(name="b", where='path = "/b"', image=image))
    s = serve(None, "--routes", str(routes))

    def ask(host: str, path: str = "/") -> tuple[int, str]:
        proc = subprocess.run(["curl", "-sS", "--http1.1", "-H", f"Host: {host}", "-w",
                               " status=%{http_code}", s.url(path)], capture_output=True,
                              text=True, timeout=60, check=True)
        return int(proc.stdout.rpartition("status=")[2]), proc.stdout

    assert "route=a" in ask("a.test")[1]
    assert "route=b" in ask("other.test", "/b/x")[1]
    assert ask("other.test", "/")[0] == 404
    # A request in flight on a while the file changes (b goes, c comes): not dropped.
    slow: list[tuple[int, str]] = []
    held = threading.Thread(target=lambda: slow.append(ask("a.test", "/sleep/30")))
    routes.write_text(route.format(name="a", where='host = "a.test"', image=image)
                      + route.format(name="c", where='host = "c.test"', image=image))
    held.start()
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "routes reloaded" in s.text(), 30, "the reload")
    assert "route=c" in ask("c.test")[1]
    assert ask("other.test", "/b")[0] == 404
    assert "route=a" in ask("a.test")[1]
    held.join(30)
    assert slow and slow[0][0] == 200 and "route=a" in slow[0][1], slow
