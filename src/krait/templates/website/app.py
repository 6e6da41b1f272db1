"""A static site: the files under site/, served by an ASGI app (the site is in the image)."""

import mimetypes
from pathlib import Path

SITE = (Path(__file__).parent / "site").resolve()


def find(path):
    """The file a URL path names, never one outside the site."""
    wanted = (SITE / path.lstrip("/")).resolve()
    if wanted.is_dir():
        wanted = wanted / "index.html"
    if SITE not in wanted.parents or not wanted.is_file():
        return None
    return wanted


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    found = find(scope["path"])
    status = 200 if found else 404
    body = found.read_bytes() if found else b"not found\n"
    kind = (mimetypes.guess_type(found.name)[0] if found else None) or "text/plain"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind.encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
