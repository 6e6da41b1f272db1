"""The clients of `krait bench abuse`, against the guest's real HTTP server in-process:
they must see what a hostile client sees, or the benchmark measures nothing."""

from __future__ import annotations

import asyncio

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
