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


def _image_stdlib(base: str) -> None:
    """Import the standard library from the image's base layer from here on, as the
    guest does: a module the image lacks is missing here as it would be in the VM (what
    was imported to get here is in every image)."""
    stdlib = os.path.dirname(os.__file__)
    path = []
    for entry in sys.path:
        if entry == stdlib or entry.startswith(stdlib + os.sep):  # lib-dynload too
            if os.path.isdir(base + entry):
                path.append(base + entry)
        elif not entry.endswith(".zip"):  # python311.zip, which no image has
            path.append(entry)
    sys.path[:] = path
    sys.path_importer_cache.clear()
    _HOST_STDLIB[:] = [stdlib, os.path.join(stdlib, "lib-dynload")]


# Where this interpreter's own standard library is (the image's holds part of it).
_HOST_STDLIB: list[str] = []


def _in_host_stdlib(name: str) -> bool:
    """Whether this interpreter's standard library has ``name`` (a module the image
    lacks, or one that exists on no Linux, such as msvcrt)."""
    import glob

    rel = name.replace(".", os.sep)
    stdlib, dynload = _HOST_STDLIB or (os.path.dirname(os.__file__), "")
    return (os.path.isfile(os.path.join(stdlib, rel + ".py"))
            or os.path.isfile(os.path.join(stdlib, rel, "__init__.py"))
            or bool(dynload and glob.glob(os.path.join(glob.escape(dynload), rel + ".*.so"))))


def _write_report(path: str) -> None:
    """What this process looked for in the standard library and the image lacks (for the
    build's check, see krait.vmm.check)."""
    from krait.guest import missing

    with open(f"{path}.{os.getpid()}.json", "w") as f:
        json.dump({"missed": sorted(filter(_in_host_stdlib, missing.missed()))}, f)


def main() -> None:
    spec = json.loads(os.environ.pop(VARIABLE))
    _image_stdlib(spec["base"])
    if spec.get("report"):
        import atexit

        report = spec["report"]
        # Workers a server forks (gunicorn's) answer the requests: each tells its own.
        os.register_at_fork(after_in_child=lambda: atexit.register(_write_report, report))
    with open(os.path.join(spec["app"], ".krait", "config.marshal"), "rb") as f:
        config = marshal.load(f)
    config["dirs"] = (spec["app"], spec["packages"])
    # On the host: loopback only, on the host ports that -p maps the app's ports to.
    config["host"] = "127.0.0.1"
    # A main app listens where it says itself; krait's server where the host maps it.
    config["app_ports"] = list(config.get("ports", ()))
    config["ports"] = [spec["ports"].get(str(p), p) for p in config.get("ports", ())]
    # Baked settings that name files of the image (KRAIT_TLS_CERT) name them in the guest.
    moved = {protocol.APP_DIR: spec["app"], protocol.PACKAGES_DIR: spec["packages"]}
    config["env"] = {key: next((here + value[len(there):] for there, here in moved.items()
                                if value == there or value.startswith(there + "/")), value)
                     for key, value in config.get("env", {}).items()}
    app.prepare(config, spec["boot"])
    control = app.Control(spec["control_fd"])
    status = app.run_app(config, control, profile=bool(spec["boot"].get("profile"))) & 0xFF
    if spec.get("report"):
        _write_report(spec["report"])
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(f"{protocol.EXIT} {status}")
    os._exit(status)  # as the VM ends: the app's threads do not hold it up
