"""What host and guest agree on: the marker, the boot parameters, the control port.

Imported by both sides (the host's ``krait.vmm`` and the guest's init), so it is
standard library only.
"""

from __future__ import annotations

from typing import Any

# On the kernel command line of every krait guest. The guest runtime refuses to
# act without it, so it can never reconfigure a host or a container.
MARKER = "krait.guest=1"
# Boot-time settings travel as one base64url(JSON) kernel argument.
BOOT_PARAM = "krait.boot"
# The second serial port: the guest reports readiness and its exit status here,
# and the host asks it to stop.
CONTROL_TTY = "/dev/ttyS1"
# Where the guest finds its pieces.
# The app's baked settings, marshalled (json would cost the guest an import of re).
CONFIG_PATH = "/krait/config.marshal"
APP_DIR = "/krait/app"
PACKAGES_DIR = "/krait/packages"
RUNTIME_DIR = "/krait/runtime"
# Fixed guest address under QEMU's user-mode network.
GUEST_ADDR = "10.0.2.15"
GATEWAY = "10.0.2.2"


def encode_boot(values: dict[str, Any]) -> str:
    import base64
    import json

    raw = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return f"{BOOT_PARAM}={base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


def decode_boot(cmdline: str) -> dict[str, Any]:
    for arg in cmdline.split():
        key, _, value = arg.partition("=")
        if key == BOOT_PARAM:
            import base64  # only when there is something to decode: each import costs boot time
            import json

            padded = value + "=" * (-len(value) % 4)
            result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
            return result
    return {}


# Control messages, one per line, guest -> host.
READY = "ready"
EXIT = "exit"  # "exit <status>"
CRASH = "crash"  # "crash <status>": the app raised
# host -> guest
STOP = "stop"
# "time <ns since the epoch>": sent after a snapshot wake (the guest's wall clock stood
# still while it was saved); the guest sets its clock and answers "ready".
SET_TIME = "time"
