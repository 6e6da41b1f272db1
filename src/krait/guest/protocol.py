"""What host and guest agree on: the marker, the boot parameters, the control port.

Imported by both sides (the host's ``krait.vmm`` and the guest's init), so it is
standard library only.
"""

from __future__ import annotations

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# On the kernel command line of every krait guest. The guest runtime refuses to
# act without it, so it can never reconfigure a host or a container.
MARKER = "krait.guest=1"
# Boot-time settings (--env values: passwords, say) never travel on the command line,
# which every local user can read in QEMU's argv: they are a small read-only disk of
# their own, a 0600 file in the VM's private folder, and ``krait.boot=/dev/vdX`` names it.
BOOT_PARAM = "krait.boot"
SECTOR = 512  # a disk is whole sectors: the JSON, then NULs
MAX_BOOT_SETTINGS = 64 * 1024
# The second serial port: the guest reports readiness and its exit status here,
# and the host asks it to stop.
CONTROL_TTY = "/dev/ttyS1"
# Where the guest finds its pieces. Each layer is a read-only disk mounted at its place:
# the base layer is the root the kernel mounts (/dev/vda); the others follow in the
# order of ``krait.disks=packages,app`` on the kernel command line (/dev/vdb, /dev/vdc).
APP_DIR = "/krait/app"
PACKAGES_DIR = "/krait/packages"
RUNTIME_DIR = "/krait/runtime"
MOUNTS = {"base": "/", "packages": PACKAGES_DIR, "app": APP_DIR}
DISKS_PARAM = "krait.disks"
# The app's baked settings, marshalled (json would cost the guest an import of re).
CONFIG_PATH = f"{APP_DIR}/.krait/config.marshal"
# The app's /etc/hosts (the base layer's /etc/hosts leads there): the names it declared.
HOSTS_PATH = f"{APP_DIR}/.krait/hosts"
# Fixed guest address under QEMU's user-mode network.
GUEST_ADDR = "10.0.2.15"
GATEWAY = "10.0.2.2"


def encode_boot(values: dict[str, Any]) -> bytes:
    """The boot disk's bytes: JSON, padded with NULs to whole sectors."""
    import json

    raw = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return raw + b"\0" * (-len(raw) % SECTOR)


def decode_boot(data: bytes) -> dict[str, Any]:
    import json  # only when there is something to decode: each import costs boot time

    result: dict[str, Any] = json.loads(data.rstrip(b"\0") or b"{}")
    return result


# Where a data volume may be mounted (a regular expression): the root is read-only, so
# /data (a folder in every image) or /mnt/NAME (the guest mounts a small tmpfs at /mnt).
VOLUME_MOUNT = r"/data|/mnt/[A-Za-z0-9_.-]{1,64}"


def volume_env(name: str) -> str:
    """The environment variable that gives the app a raw volume's device path."""
    return f"KRAIT_VOLUME_{name.upper()}"


def boot_device(cmdline: str) -> str | None:
    """The disk holding this boot's settings, if it has any (the first krait.boot=)."""
    for arg in cmdline.split():
        key, _, value = arg.partition("=")
        if key == BOOT_PARAM:
            return value
    return None


# Control messages, one per line, guest -> host.
READY = "ready"
EXIT = "exit"  # "exit <status>"
CRASH = "crash"  # "crash <status>": the app raised
# "timeline exec=0.51 main=0.62 mounted=0.63 imported=0.88 ready=0.90": when each boot
# step was done, seconds since the guest kernel started; sent once, after "ready".
TIMELINE = "timeline"
# No message is longer; the host drops a longer line (a guest cannot grow its memory).
MAX_LINE = 1024


def parse_status(arg: str) -> int | None:
    """The status of an "exit"/"crash" message: 0-255 in decimal, else None (a failure)."""
    if arg.isascii() and arg.isdigit() and len(arg) <= 3 and int(arg) <= 255:
        return int(arg)
    return None


# host -> guest
STOP = "stop"
# "wake <ns since the epoch> [<64 hex digits>]": sent after a resume from pause and after
# a snapshot wake (the guest's wall clock stood still); with the digits (a clone), fresh
# entropy for the kernel and Python, and the guest answers "ready" once it is in.
WAKE = "wake"
