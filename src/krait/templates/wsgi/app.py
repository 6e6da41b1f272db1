"""A WSGI app (what Flask and Django are), served in the VM by krait's builtin server
(or waitress: server = "waitress")."""

import json
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/":
        status, body = "200 OK", {"hello": os.environ.get("GREETING", "world")}
    else:
        status, body = "404 Not Found", {"error": "not found"}
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]
