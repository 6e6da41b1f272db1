"""``krait serve`` as a process: the gateway, its control socket, signals, clean exit.

While it runs, ``state/serve/NAME.json`` says where it listens and where its control
socket is; ``krait replace NAME IMAGE`` (or SIGHUP: reload the same file) swaps the image
with no downtime. Whatever way it ends (Ctrl-C, SIGTERM, an error), every instance it
started is stopped before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from krait.errors import ConfigError, KraitError
from krait.fleet.driver import Driver, Host, ImageRef, VmDriver
from krait.fleet.gateway import Gateway
from krait.fleet.observe import clean_orphans
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits
from krait.fleet.state import serve_dir, serve_record
from krait.image.signing import Trust
from krait.vmm.launch import RunOptions

log = logging.getLogger("krait.fleet")


def find_serve(name: str) -> dict[str, Any] | None:
    """What serve ``name`` recorded (where it listens, its control socket), if it runs."""
    info = serve_record(name)
    try:
        if info is not None:
            os.kill(info["pid"], 0)
    except OSError:
        return None  # stale: that serve is gone
    return info


async def control_request(name: str, request: dict[str, Any], timeout: float = 120.0
                          ) -> dict[str, Any]:
    """Send one request to a running `krait serve` and return its answer."""
    info = find_serve(name)
    if info is None:
        raise ConfigError(f"no `krait serve` named {name!r} is running",
                          hint="`krait ps` shows the instances of running serves")
    reader, writer = await asyncio.open_unix_connection(info["control"])
    writer.write(json.dumps(request).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), timeout)
    writer.close()
    answer: dict[str, Any] = json.loads(line or b"{}")
    return answer


class Server:
    def __init__(self, image: Path, port: int, policy: ScalePolicy, name: str,
                 driver: Driver, boot_timeout: float = 60.0, host: str = "127.0.0.1",
                 limits: Limits | None = None, trust: Trust | None = None) -> None:
        self.image_path = image
        self.generation = 1
        self.trust = trust  # what every image it serves must be, replacements too
        self.gateway = Gateway(driver, ImageRef.open(image, 1, trust), policy, name, host=host,
                               port=port, boot_timeout=boot_timeout,
                               limits=file_limit_for(limits or Limits()))
        self.name = name
        self.stopping = asyncio.Event()
        self.record = serve_dir() / f"{name}.json"
        self.control = serve_dir() / f"{name}.sock"

    async def replace(self, path: Path) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(None, ImageRef.open, path, self.generation + 1,
                                         self.trust)
        if ref.digest == self.gateway.image.digest:
            return {"ok": True, "changed": False, "generation": self.generation}
        self.generation += 1
        self.image_path = path
        self.gateway.replace(ref)
        return {"ok": True, "changed": True, "generation": self.generation}

    async def _on_control(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline() or b"{}")
            answer: dict[str, Any]
            if request.get("op") == "replace":
                answer = await self.replace(Path(request["image"]))
            elif request.get("op") == "status":
                answer = {"ok": True, "stats": asdict(self.gateway.stats),
                          "generation": self.generation, "image": str(self.image_path),
                          "instances": [v.__dict__ for v in self.gateway.views()]}
            else:
                answer = {"ok": False, "error": f"unknown request {request!r}"}
        except KraitError as e:
            answer = {"ok": False, "error": e.message}
        except (ValueError, KeyError) as e:
            answer = {"ok": False, "error": f"bad request: {e}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(OSError):
            await writer.drain()
            writer.close()

    async def run(self, on_listening: Any = None) -> None:
        loop = asyncio.get_running_loop()
        existing = find_serve(self.name)
        if existing is not None:
            raise ConfigError(f"a `krait serve` named {self.name!r} already runs "
                              f"(pid {existing['pid']})", hint="pick another --name")
        clean_orphans()
        self.control.unlink(missing_ok=True)
        async with self.gateway:
            await self._serve(loop, on_listening)

    async def _serve(self, loop: asyncio.AbstractEventLoop, on_listening: Any) -> None:
        """While the gateway listens: the control socket, the record, the signals."""
        control = await asyncio.start_unix_server(self._on_control, path=str(self.control))
        os.chmod(self.control, 0o600)  # in a 0700 folder already; it takes commands
        try:
            self.record.write_text(json.dumps({
                "pid": os.getpid(), "name": self.name, "host": self.gateway.host,
                "port": self.gateway.port,
                "image": str(self.image_path), "control": str(self.control)}) + "\n")
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(
                self._reload()))
            if on_listening:
                on_listening(self.gateway)
            await self.stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            control.close()
            self.record.unlink(missing_ok=True)
            self.control.unlink(missing_ok=True)

    def _on_stop_signal(self) -> None:
        if self.stopping.is_set():  # asked again: no more grace
            log.warning("%s: stopping now, without grace", self.name)
            self.gateway.driver.kill_all()
        self.stopping.set()

    async def _reload(self) -> None:
        try:
            await self.replace(self.image_path)
        except KraitError as e:
            log.error("%s: reload failed: %s", self.name, e.message)


def raise_file_limit(want: int) -> int:
    """Raise this process's open-file limit to ``want``, or as far as its hard limit
    allows; return the limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def file_limit_for(limits: Limits) -> Limits:
    """Raise this process's open-file limit to what ``limits`` needs (two descriptors a
    proxied connection, and some for QEMU and the control socket); where the hard limit
    is lower, fewer connections are accepted, said once."""
    want = 2 * limits.max_connections + 256
    got = raise_file_limit(want)
    if got < want:
        fitting = max(16, (got - 256) // 2)
        log.warning("the open-file limit (%d) allows %d connections, not %d", got,
                    fitting, limits.max_connections)
        limits = replace(limits, max_connections=fitting,
                         max_per_client=min(limits.max_per_client, fitting))
    return limits


def run_server(image: Path, port: int, policy: ScalePolicy, name: str, options: RunOptions,
               snapshots: bool = True, boot_timeout: float = 60.0,
               on_listening: Any = None, host: str = "127.0.0.1",
               limits: Limits | None = None, trust: Trust | None = None,
               hosts: list[Host] | None = None) -> Gateway:
    driver = VmDriver(options, use_snapshots=snapshots, boot_timeout=boot_timeout,
                      hosts=hosts)
    server = Server(image, port, policy, name, driver, boot_timeout, host, limits, trust)
    asyncio.run(server.run(on_listening))
    return server.gateway
