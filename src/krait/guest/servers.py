"""Serving an app with a server from the app's own environment (``server`` setting).

The servers themselves (uvicorn for ASGI, waitress for WSGI) are not part of krait:
they live in the app's venv and are traced like any other dependency. This module
only knows how to start them on one port and tell krait when they listen. It is
standard library only; the servers are imported by name when they are asked for.

At build time the tracer calls :func:`preload`, which makes the server import
everything it would otherwise import lazily at start-up (uvicorn picks its protocol,
loop and lifespan classes by name), so the trace sees those modules too.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
from collections.abc import Callable

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# What each server needs imported, beyond what preload() pulls in by running its set-up.
MODULES = {"uvicorn": ["uvicorn"], "waitress": ["waitress", "waitress.server"]}
WAITRESS_THREADS = 4


def _uvicorn_config(app: Any, port: int, host: str = "0.0.0.0") -> Any:
    uvicorn = importlib.import_module("uvicorn")
    # One asyncio loop and the pure-Python h11 parser: no uvloop/httptools to carry.
    # WebSockets as on the host: with the app's websockets or wsproto, if it has one.
    return uvicorn.Config(app, host=host, port=port, loop="asyncio", http="h11",
                          ws="auto", lifespan="auto", log_config=None, log_level="warning",
                          access_log=False, proxy_headers=False, server_header=False)


def serve_uvicorn(app: Any, port: int, ready: Callable[[], None],
                  host: str = "0.0.0.0") -> int:
    """Run ``app`` under uvicorn; ``ready`` is called once it listens."""
    uvicorn = importlib.import_module("uvicorn")

    class Server(uvicorn.Server):  # type: ignore[name-defined]
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready()

    def stopped(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # SIGTERM ends it gracefully (uvicorn's own signal handling); then uvicorn raises the
    # signal again with the handler it found, which, left as the default, would kill the
    # app's process (it is PID 1's child, not PID 1, which the kernel spares): found,
    # this one says the stop went as asked.
    signal.signal(signal.SIGTERM, stopped)
    server = Server(_uvicorn_config(app, port, host))
    with contextlib.suppress(SystemExit):
        server.run()
    return 0 if server.started else 1


def serve_waitress(app: Any, port: int, ready: Callable[[], None],
                   host: str = "0.0.0.0") -> int:
    """Run ``app`` under waitress (one process, a small thread pool)."""
    waitress_server = importlib.import_module("waitress.server")
    server = waitress_server.create_server(app, host=host, port=port,
                                           threads=WAITRESS_THREADS, ident="krait")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    ready()
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
        server.task_dispatcher.shutdown()
    return 0


SERVE = {"uvicorn": serve_uvicorn, "waitress": serve_waitress}


def serve(server: str, app: Any, port: int, ready: Callable[[], None],
          host: str = "0.0.0.0") -> int:
    return SERVE[server](app, port, ready, host)


def preload(server: str, app: Any) -> None:
    """Build time only: import what ``server`` would import when it starts serving ``app``."""
    for name in MODULES.get(server, []):
        importlib.import_module(name)
    if server == "uvicorn":
        config = _uvicorn_config(app, 8080)
        config.setup_event_loop()
        config.load()  # imports the protocol, lifespan and middleware classes by name
