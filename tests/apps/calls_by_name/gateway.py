"""A small API gateway: it calls another service over HTTPS by name, as services do."""

import json
import socket
import time
import urllib.request
from urllib.parse import parse_qs

import requests


def call(host, client):
    url = f"https://{host}/hello"
    try:
        if client == "urllib":
            with urllib.request.urlopen(url, timeout=20) as answer:
                return 200, {"status": answer.status, "body": answer.read().decode()}
        answer = requests.get(url, timeout=20)
        return 200, {"status": answer.status_code, "body": answer.text}
    except (OSError, requests.RequestException) as e:
        return 502, {"error": type(e).__name__, "detail": str(e)[:300]}


def resolve(host):
    started = time.perf_counter()
    try:
        addresses = sorted({a[4][0] for a in socket.getaddrinfo(host, 443)})
        return 200, {"addresses": addresses}
    except socket.gaierror as e:
        return 200, {"error": e.errno, "name_not_known": e.errno == socket.EAI_NONAME,
                     "ms": (time.perf_counter() - started) * 1000}


def app(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    host = query.get("host", "api.example.test")
    if environ["PATH_INFO"] == "/resolve":
        status, body = resolve(host)
    else:
        status, body = call(host, query.get("client", "requests"))
    start_response(f"{status} X", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
