"""sqlite-utils finds its plugins through entry points (pluggy): sqlite-utils-dateutil
adds SQL functions to every connection it makes."""

import json

import sqlite_utils
from sqlite_utils.plugins import get_plugins


def app(environ, start_response):
    db = sqlite_utils.Database(memory=True)
    row = db.execute("select dateutil_parse('3rd October 2026 3pm')").fetchone()
    body = json.dumps({"parsed": row[0],
                       "plugins": sorted(p["name"] for p in get_plugins())})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
