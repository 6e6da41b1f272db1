"""An aiohttp app: its own server and event loop, run as a plain `main`.

aiohttp parses HTTP with its compiled extension (aiohttp._http_parser) and builds on
multidict, yarl, frozenlist and propcache, each with a compiled extension.
"""

import os

from aiohttp import web

routes = web.RouteTableDef()
COUNTS: dict[str, int] = {}


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.Response(text=f"Hello from aiohttp (pid {os.getpid()})\n")


@routes.post("/count/{name}")
async def count(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return web.json_response({"name": name, "count": COUNTS[name]})


@routes.get("/query")
async def query(request: web.Request) -> web.Response:
    # multidict keeps repeated keys; yarl decoded them.
    return web.json_response({k: request.query.getall(k) for k in sorted(request.query)})


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes(routes)
    return app


def main() -> int:
    # handle_signals: SIGTERM (krait's stop) ends the app gracefully.
    web.run_app(make_app(), host="0.0.0.0", port=8080, print=None, handle_signals=True,
                access_log=None)
    return 0
