"""The requests an image is asked to prove it serves (its ``check`` setting, or the
default for its kind), and how one is asked: by `krait build` of the image run as a
process (krait.vmm.check), and by `krait serve` of a snapshot's template before it is
saved (krait.fleet.driver), so that every clone wakes with the app's first-request work
done."""

from __future__ import annotations

import http.client

from krait.image.archive import Image

REQUEST_TIMEOUT = 30.0


def requests_for(image: Image) -> tuple[str, ...] | None:
    """The requests to send (``check``, or the default for the app's kind); None when
    the image is not to be run at all."""
    settings = image.manifest.settings
    declared = settings.get("check")
    if declared is not None:
        return tuple(declared) if declared else None
    if image.manifest.boot.connect:
        return None  # its services are not there at build time
    if settings.get("kind") in ("asgi", "wsgi"):
        return ("GET /",)
    return () if image.manifest.ports else None


def warm_requests(image: Image) -> tuple[str, ...]:
    """What a snapshot's template is asked before it is saved: the check requests, but
    none for an app that calls services. Its calls would go through the guest's tunnel
    to the host (krait.guest.tunnel), whose state the snapshot would keep mid-stream,
    while each clone's host side starts it afresh."""
    if image.manifest.boot.connect:
        return ()
    return requests_for(image) or ()


def ask(host: str, port: int, request: str, timeout: float = REQUEST_TIMEOUT) -> int:
    """Send one request ("METHOD /path") and read its answer; its status. OSError or
    http.client.HTTPException if there is none."""
    method, _, target = request.partition(" ")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, headers={"User-Agent": "krait-check"})
        response = conn.getresponse()
        response.read(1 << 20)
        return response.status
    finally:
        conn.close()
