"""Many apps behind one port: the routes file, the pure route lookup, and a router in
front of gateways of fake instances (one driver per route, as serve builds them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from krait.errors import ConfigError
from krait.fleet.gateway import Gateway
from krait.fleet.metrics import Metrics
from krait.fleet.router import Router
from krait.fleet.routes import RouteSpec, find_route, load_routes

from ._fleet_fakes import FakeClock, FakeDriver, image

ROUTES = """
[[route]]
host = "api.example"
image = "api.krait"
max = 2
idle = "10s"
pause = "off"

[[route]]
name = "docs"
path = "/docs"
image = "sub/docs.krait"
env = ["GREETING=hi"]

[[route]]
host = "api.example"
path = "/v2"
image = "api2.krait"
"""


def test_a_routes_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    api, docs, v2 = load_routes(path)
    assert (api.name, api.host, api.path, api.image) == ("api.example", "api.example", "/",
                                                         tmp_path / "api.krait")
    assert api.policy.max_instances == 2 and api.policy.pause_seconds is None
    assert api.policy.idle_seconds == 10
    assert (docs.name, docs.host, docs.path, docs.env) == ("docs", None, "/docs",
                                                           ("GREETING=hi",))
    assert v2.name == "api.example-v2"
    for bad, message in [("[[route]]\npath = '/'\n", "`image`"),
                         ("[[route]]\nimage = 'a'\nhots = 'x'\n", "unknown key 'hots'"),
                         ("[[route]]\nimage = 'a'\nmin = 3\n", "min <= max"),
                         ("[[route]]\nimage = 'a'\n[[route]]\nimage = 'b'\n", "same host"),
                         ("x = 1\n", r"no \[\[route\]\] tables"), ("[[route]\n", "cannot read")]:
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_routes(path)


def test_find_route_by_host_then_longest_whole_segment_prefix(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    routes = load_routes(path)

    def name(host: bytes | None, target: bytes) -> str | None:
        found = find_route(routes, host, target)
        return found.name if found else None

    assert name(b"api.example", b"/") == "api.example"
    assert name(b"API.example:8080", b"/v2/items?x=1") == "api.example-v2"
    assert name(b"api.example", b"/v20") == "api.example"  # whole segments only
    assert name(b"api.example", b"/docs/x") == "api.example"  # a host's route first
    assert name(b"other.example", b"/docs") == "docs"
    assert name(b"other.example", b"/docsx") is None
    assert name(None, b"/") is None


async def ask(port: int, host: str, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_a_router_serves_each_route_from_its_own_instances_and_reloads() -> None:
    async def main() -> None:
        drivers: dict[str, FakeDriver] = {}
        metrics = Metrics()
        generation = {"n": 1}

        def make(route: RouteSpec) -> Gateway:
            driver = drivers[route.name] = FakeDriver()
            return Gateway(driver, image(generation["n"]), route.policy, route.name,
                           clock=FakeClock(), boot_timeout=5, metrics=metrics, listen=False)

        a = RouteSpec("a", Path("/a.krait"), host="a.example")
        b = RouteSpec("b", Path("/b.krait"), path="/b")
        async with Router([a, b], make, metrics=metrics) as router:
            assert drivers["a"].booted == [] and drivers["b"].booted == []  # scaled to zero
            assert b"id=a-1" in await ask(router.port, "a.example")
            assert b"id=b-1" in await ask(router.port, "x.example", "/b/thing")
            assert (await ask(router.port, "x.example", "/")).startswith(b"HTTP/1.1 404 ")
            # A slow request on a, while b is changed and c added: a's is not dropped.
            slow = asyncio.create_task(ask(router.port, "a.example", "/sleep/5"))
            await asyncio.sleep(0.1)
            generation["n"] = 2
            c = RouteSpec("c", Path("/c.krait"), host="c.example")
            b2 = RouteSpec("b", Path("/b2.krait"), path="/b")
            changes = await router.reload([a, b2, c])
            assert changes == {"added": ["c"], "changed": ["b"], "removed": []}
            assert b"gen=2" in await ask(router.port, "x.example", "/b")
            assert b"id=c-1" in await ask(router.port, "c.example")
            assert b"path=/sleep/5" in await slow
            await router.reload([c])
            assert (await ask(router.port, "a.example")).startswith(b"HTTP/1.1 404 ")
            await asyncio.sleep(0.2)
            assert drivers["a"].running() == []  # a removed route stops its instances
        assert all(d.running() == [] for d in drivers.values())

    asyncio.run(main())
