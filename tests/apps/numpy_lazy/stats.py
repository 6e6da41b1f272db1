"""numpy at its default memory; numpy.random and numpy.linalg are first used in a request."""

import json

import numpy as np


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    rng = np.random.default_rng(7)  # numpy.random: imported lazily by numpy.__getattr__
    m = rng.standard_normal((40, 40)) + 40 * np.eye(40)
    body = json.dumps({
        "numpy": np.__version__,
        "identity": float(np.trace(m @ np.linalg.inv(m))),
        "mean": float(np.mean([1.0, 2.0, 3.0, 4.0])),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
