"""Draws a picture and answers it in the format the path names (/webp, /jpeg, /png)."""

import io

from PIL import Image, ImageDraw


def app(environ, start_response):
    fmt = environ["PATH_INFO"].strip("/").upper() or "PNG"
    picture = Image.new("RGB", (64, 48), "navy")
    ImageDraw.Draw(picture).ellipse((8, 8, 56, 40), fill="gold")
    out = io.BytesIO()
    try:
        picture.save(out, fmt, quality=80)
    except (KeyError, ValueError) as e:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [f"cannot write {fmt}: {e!r}\n".encode()]
    start_response("200 OK", [("Content-Type", Image.MIME.get(fmt, "application/octet-stream"))])
    return [out.getvalue()]
