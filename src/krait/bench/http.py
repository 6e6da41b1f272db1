"""Asking a booted app over HTTP, as a client would: the first answer, and a wrk load."""

from __future__ import annotations

import re
import shutil
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

from krait.errors import VmError
from krait.run import run


def attempt_timeout(attempt: int) -> float:
    """How long one polling attempt may take: short at first, longer later.

    A request sent before the guest's network is up is held by QEMU's user-mode
    network, which retries its connection to the guest after 1 s, 2 s, ...; short
    attempts step around that, longer ones still let a slow first answer arrive. (The
    QEMU krait starts forwards a port only once the app is ready; libvirt's QEMU and a
    port given to QEMU by hand forward from the start.)
    """
    # int ** int is typed Any (a negative power is a float); this one is never negative.
    factor: int = 2 ** min(attempt // 8, 5)
    return min(0.25 * factor, 5.0)  # 5 s from the 40th on


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET (HTTPS without checking the certificate); an HTTP error is an answer too."""
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def first_answer(url: str, deadline: float, expect: bytes | None = None) -> tuple[int, bytes]:
    """Poll ``url`` until it answers (with ``expect``: a 200 whose body holds it) or the
    deadline passes."""
    attempt = 0
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = get(url, attempt_timeout(attempt))
            if expect is None or (status == 200 and expect in body):
                return status, body
            last = (status, body[:200])
        except (OSError, urllib.error.URLError, ssl.SSLError) as e:
            last = e
        attempt += 1
        time.sleep(0.005)
    raise VmError(f"{url} gave no {'correct ' if expect is not None else ''}answer in time "
                  f"(last: {last!r})")


def status_of(data: bytes) -> int:
    """The status code of a raw HTTP answer; 0 for none."""
    head = data.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0


_LATENCY = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """The numbers of a `wrk --latency` report."""
    out: dict[str, Any] = {"requests": 0, "errors": 0, "requests_per_s": 0.0}
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+)", text):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["requests_per_s"] = float(m.group(1))
    socket_errors = {}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text):
        socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                 map(int, m.groups()), strict=True))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) \
        else 0
    out["socket_errors"] = socket_errors
    out["non_2xx"] = non_2xx
    out["errors"] = sum(socket_errors.values()) + non_2xx
    out["latency_ms"] = {f"p{p}": round(float(v) * _UNIT[u] * 1000, 2)
                         for p, v, u in _LATENCY.findall(text)}
    return out


def run_wrk(url: str, seconds: int, connections: int, threads: int = 2,
            timeout: str = "5s") -> dict[str, Any]:
    """A bounded wrk load on ``url``: its numbers, and the command that made them."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise VmError("wrk is not installed", hint="apt-get install wrk (or `make deps`)")
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            "--timeout", timeout, url]
    text = run(argv, timeout=seconds + 60).stdout
    return {**parse_wrk(text), "command": " ".join(argv), "output": text}
