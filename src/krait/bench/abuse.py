"""``krait bench abuse``: `krait serve` against hostile clients, measured from outside.

A real ``krait serve`` process (so its event loop is its own, as in production) and, in
this process, three kinds of abuse, each measured against the same thing without it, in
alternating rounds (this machine is noisy, and TCG more so):

- **idle**: 1000 connections that connect and say nothing, from four loopback addresses
  (each under the per-client cap), held open (reopened as the gateway closes them), while
  a well-behaved client from 127.0.0.1 asks; its latency over its unloaded latency;
- **big body**: a 64 MB POST, answered 413 before the body is read, then a GET;
- **slowloris**: connections that send a request head a line every few seconds beside a
  bounded ``wrk`` load; the well-behaved client's errors (the target: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait.bench.http import run_wrk, status_of
from krait.bench.result import machine_info, summarize
from krait.errors import VmError
from krait.fleet.serve import raise_file_limit
from krait.fleet.serving import ServeChild, serving
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.ports import free_port

Progress = Callable[[str], None]
CLIENT = "127.0.0.1"  # the well-behaved client; abusers come from 127.0.0.2 and up


def served(image: Path, port: int, log: Path, *args: str
           ) -> contextlib.AbstractContextManager[ServeChild]:
    """A ``krait serve`` of ``image`` on ``port`` that keeps its instances, stopped
    however the block ends."""
    return serving(image, port, log, "--idle", "10m", "--pause", "off", *args,
                   name=f"bench-abuse-{port}")


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Until the server closes the connection; what came before a reset counts (a server
    that refuses a body may reset a client still sending it, after its answer)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def ask(port: int, timeout: float = 120.0) -> tuple[int, float]:
    """One request from the well-behaved client: (status, seconds to the whole answer);
    status 0 if it got no answer (refused, reset, timed out)."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(CLIENT, port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError):
        data = b""
    return status_of(data), time.monotonic() - started


@dataclass
class Abusers:
    """``count`` connections held open from ``addresses``, each doing ``behave`` until the
    server closes it; then it is opened again, so the count holds for as long as wanted."""

    port: int
    count: int
    addresses: list[str]
    behave: Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]
    opened: int = 0
    open_now: int = 0
    closed_by_server: int = 0
    answers: dict[int, int] = field(default_factory=dict)  # status -> how many
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Abusers:
        addresses = itertools.cycle(self.addresses)
        self._tasks = [asyncio.create_task(self._hold(next(addresses)))
                       for _ in range(self.count)]
        deadline = time.monotonic() + 30
        while self.open_now < self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *_: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _hold(self, address: str) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(address, 0))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.opened += 1
            self.open_now += 1
            talker = asyncio.create_task(self.behave(writer))
            try:
                status = status_of(await read_all(reader))
                self.answers[status] = self.answers.get(status, 0) + 1
            except OSError:
                pass
            finally:
                self.closed_by_server += 1
                self.open_now -= 1
                talker.cancel()
                await asyncio.gather(talker, return_exceptions=True)
                writer.close()


async def say_nothing(writer: asyncio.StreamWriter) -> None:
    pass


async def slowloris(writer: asyncio.StreamWriter) -> None:
    """A request head that never ends: one more header line every 2 seconds."""
    writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n")
    with contextlib.suppress(OSError):
        for i in itertools.count():
            await writer.drain()
            await asyncio.sleep(2)
            writer.write(f"X-Slow-{i}: aaaaaaaa\r\n".encode())


def addresses(first: int, n: int) -> list[str]:
    return [f"127.0.0.{first + i}" for i in range(n)]


async def _idle_rounds(port: int, idle: int, rounds: int, samples: int,
                       progress: Progress) -> dict[str, Any]:
    per_address = 200  # under the default per-client cap (256)
    unloaded: list[float] = []
    loaded: list[float] = []
    held: list[dict[str, int]] = []
    for r in range(rounds):
        for _ in range(samples):
            status, seconds = await ask(port)
            if status != 200:
                raise VmError(f"the app answered {status} with nothing else going on")
            unloaded.append(round(seconds, 4))
        async with Abusers(port, idle, addresses(2, -(-idle // per_address)),
                           say_nothing) as abusers:
            for _ in range(samples):
                status, seconds = await ask(port)
                if status != 200:
                    raise VmError(f"with {abusers.open_now} idle connections held, the app "
                                  f"answered {status}")
                loaded.append(round(seconds, 4))
            held.append({"open_while_asking": abusers.open_now, "opened": abusers.opened})
        progress(f"idle round {r + 1}/{rounds}: unloaded median "
                 f"{statistics.median(unloaded[-samples:]) * 1000:.1f} ms, with {idle} idle "
                 f"connections {statistics.median(loaded[-samples:]) * 1000:.1f} ms")
    return {
        "idle_connections": idle, "from_addresses": -(-idle // per_address),
        "unloaded_s": {**summarize(unloaded), "samples": unloaded},
        "with_idle_s": {**summarize(loaded), "samples": loaded},
        "ratio_of_medians": round(statistics.median(loaded) / statistics.median(unloaded), 2),
        "held": held,
    }


async def post_big(port: int, size: int) -> tuple[int, float, int]:
    """A POST of ``size`` bytes, sent while the answer is read: (status, seconds, bytes
    of body sent before the server answered or closed)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(CLIENT, port)
    writer.write(f"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n"
                 f"Connection: close\r\n\r\n".encode())
    sent = 0

    async def send_body() -> None:
        nonlocal sent
        chunk = b"x" * (1 << 20)
        with contextlib.suppress(OSError):
            while sent < size:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

    sender = asyncio.create_task(send_body())
    try:
        data = await asyncio.wait_for(read_all(reader), 120)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return status_of(data), time.monotonic() - started, sent


async def _big_body(port: int, size: int, runs: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for _ in range(runs):
        status, seconds, sent = await post_big(port, size)
        after, _ = await ask(port)
        out.append({"status": status, "seconds": round(seconds, 4), "body_bytes_sent": sent,
                    "next_get": after})
    return {"body_bytes": size, "runs": out,
            "all_413": all(r["status"] == 413 for r in out),
            "kept_serving": all(r["next_get"] == 200 for r in out)}


async def _slowloris_rounds(port: int, slow: int, rounds: int, seconds: int,
                            connections: int, progress: Progress) -> dict[str, Any]:
    url = f"http://{CLIENT}:{port}/"
    alone: list[dict[str, Any]] = []
    beside: list[dict[str, Any]] = []
    abused: list[dict[str, Any]] = []

    def wrk() -> dict[str, Any]:
        result = run_wrk(url, seconds, connections, 2, "10s")
        return {k: result[k] for k in ("requests", "requests_per_s", "errors", "non_2xx",
                                       "socket_errors", "latency_ms")}

    for r in range(rounds):
        alone.append(await asyncio.to_thread(wrk))
        async with Abusers(port, slow, addresses(10, max(1, slow // 200)),
                           slowloris) as abusers:
            beside.append(await asyncio.to_thread(wrk))
            abused.append({"open_while_loaded": abusers.open_now, "opened": abusers.opened,
                           "closed_by_server": abusers.closed_by_server,
                           "answers": {str(k): v for k, v in sorted(abusers.answers.items())}})
        progress(f"slowloris round {r + 1}/{rounds}: wrk alone "
                 f"{alone[-1]['requests_per_s']:.0f} req/s {alone[-1]['errors']} errors; "
                 f"beside {slow} slow clients {beside[-1]['requests_per_s']:.0f} req/s "
                 f"{beside[-1]['errors']} errors")
    return {
        "slow_connections": slow, "wrk_seconds": seconds, "wrk_connections": connections,
        "wrk_alone": alone, "wrk_beside_slowloris": beside, "slowloris": abused,
        "errors_beside_slowloris": sum(b["errors"] for b in beside),
        "requests_per_s_ratio": round(
            statistics.median(b["requests_per_s"] for b in beside)
            / max(1e-9, statistics.median(a["requests_per_s"] for a in alone)), 2),
    }


def bench_abuse(image_path: Path, idle: int = 1000, rounds: int = 3, samples: int = 10,
                body_mb: int = 64, slow: int = 200, wrk_seconds: int = 10,
                wrk_connections: int = 8, progress: Progress = lambda _: None,
                ) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise VmError("wrk is not installed", hint="apt-get install wrk (or make deps)")
    _, spec = prepare(image_path, RunOptions())
    raise_file_limit(2 * (idle + slow) + 256)  # our clients' sockets
    port = free_port()

    async def main() -> dict[str, Any]:
        status, seconds = await ask(port)  # the first boot, not measured below
        if status != 200:
            raise VmError(f"the app answered {status} through krait serve, not 200")
        progress(f"booted and answered in {seconds:.2f}s")
        idle_result = await _idle_rounds(port, idle, rounds, samples, progress)
        body = await _big_body(port, body_mb << 20, rounds)
        progress(f"{body_mb} MB POST: {[r['status'] for r in body['runs']]}, then "
                 f"{[r['next_get'] for r in body['runs']]}")
        slowloris_result = await _slowloris_rounds(port, slow, rounds, wrk_seconds,
                                                   wrk_connections, progress)
        return {"idle": idle_result, "big_body": body, "slowloris": slowloris_result}

    with tempfile.TemporaryDirectory(prefix="krait-bench-abuse-") as tmp:
        log = Path(tmp) / "serve.log"
        with served(image_path, port, log):
            results = asyncio.run(main())
        serve_log = log.read_text(errors="replace").splitlines()
    return {
        "benchmark": "abuse", "accelerator": spec.accel.name, "accel_reason": spec.accel.reason,
        "params": {"image": str(image_path), "memory_mib": spec.memory, "rounds": rounds,
                   "samples_per_round": samples},
        **results,
        "serve_log_warnings": sum("WARNING" in line for line in serve_log),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
