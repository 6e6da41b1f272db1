"""The clients of `krait bench abuse`, against the guest's real HTTP server in-process:
they must see what a hostile client sees, or the benchmark measures nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from krait.bench import abuse

from .test_guest_http import EchoApp, run, serving


def test_the_well_behaved_client_and_the_oversized_post() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            assert (await abuse.ask(port))[0] == 200
            status, _, _ = await abuse.post_big(port, 50_000)  # the limit here: 1000
            assert status == 413
            assert (await abuse.ask(port))[0] == 200
        assert (await abuse.ask(port))[0] == 0  # nobody listens: no answer, no exception

    run(test)


def test_abusers_hold_their_count_and_see_the_server_close_them() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            async with abuse.Abusers(port, 3, abuse.addresses(2, 2),
                                     abuse.slowloris) as slow:
                assert slow.open_now == 3
                await asyncio.sleep(1.5)  # the header timeout here: 0.5 s
                assert slow.answers.get(408, 0) >= 3  # each closed with a 408 ...
                assert slow.opened >= 6 and slow.open_now == 3  # ... and opened again
            async with abuse.Abusers(port, 3, ["127.0.0.2"], abuse.say_nothing) as idle:
                assert idle.open_now == 3
                assert (await abuse.ask(port))[0] == 200

    run(test)


def test_drip_clients_get_408_from_the_http_gateway_and_boot_nothing() -> None:
    """The drip part's clients, against krait's own gateway (a fake instance behind):
    each is refused by the gateway once its head is late, and none takes an instance."""
    from functools import partial

    from krait.fleet.pool import Limits

    from ._fleet_fakes import run_gateway

    async def test(gw: Any, driver: Any, clock: Any) -> None:
        async with abuse.Abusers(gw.port, 6, abuse.addresses(2, 2),
                                 partial(abuse.drip, every=0.1)) as dripping:
            assert dripping.open_now == 6
            await asyncio.sleep(1.0)  # the head timeout here: 0.4 s
            assert dripping.answers.get(408, 0) >= 6 and dripping.open_now == 6
            assert (await abuse.ask(gw.port))[0] == 200
        assert driver.booted == [("t-1", 1)]  # the well-behaved request's, alone

    run_gateway(test, limits=Limits(head_timeout=0.4))


def test_protocols_ab_says_what_http_costs() -> None:
    from krait.bench.protocols import against

    same = against([1000.0, 1010, 990, 1005, 995], [1002.0, 998, 1001, 1003, 997])
    assert same["verdict"] == "no real difference"
    slower = against([1000.0, 1010, 990, 1005, 995], [700.0, 710, 690, 705, 695])
    assert slower["verdict"] == "B serves fewer requests/s" and slower["cost"] == 0.3
