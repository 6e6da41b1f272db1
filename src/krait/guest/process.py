"""`krait run --target process`: an image's app as a plain process on the host, for an
edit-run loop far quicker than a boot. The image's own layers (unpacked by the host),
its baked settings, the same readiness line, exit status, environment and ports; the
same app-running half of the runtime (krait.guest.app), with a socket pair where a VM has
its control port. No mounts, no confinement, no reset: those are PID 1's, in a VM.

The host starts the image's interpreter with ``-I -S`` (nothing of the host's
site-packages) and hands over, in ``$KRAIT_PROCESS``, where the layers are, the control
channel's descriptor, the port map and this boot's settings.
"""

from __future__ import annotations

import json
import marshal
import os
import sys

from krait.guest import app, protocol

VARIABLE = "KRAIT_PROCESS"


def main() -> None:
    spec = json.loads(os.environ.pop(VARIABLE))
    with open(os.path.join(spec["app"], ".krait", "config.marshal"), "rb") as f:
        config = marshal.load(f)
    config["dirs"] = (spec["app"], spec["packages"])
    # On the host: loopback only, on the host ports that -p maps the app's ports to.
    config["host"] = "127.0.0.1"
    config["ports"] = [spec["ports"].get(str(p), p) for p in config.get("ports", ())]
    app.prepare(config, spec["boot"])
    control = app.Control(spec["control_fd"])
    status = app.run_app(config, control) & 0xFF
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(f"{protocol.EXIT} {status}")
    os._exit(status)  # as the VM ends: the app's threads do not hold it up
