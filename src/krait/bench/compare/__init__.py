"""``krait bench compare``: the same app as a process, a container, a general-purpose VM
and a krait unikernel, measured the same way.

    payload.py     the app + krait's servers + a stats path, for every variant
    rootfs.py      cached Debian roots (debootstrap) for the container and the VM
    debian.py      how those two serve the app: gunicorn or uvicorn from a venv
    process.py · container.py · gpvm.py · unikernel.py   one module per variant
    surface.py     attack surface counted from the artifact
    base.py        the variant interface and the measuring loop
    report.py      JSON per app; markdown and PNG with the apps side by side
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from krait.bench.compare._common import Settings, VariantResult, VariantSkipped
from krait.bench.compare.base import Variant, measure
from krait.bench.compare.container import ContainerVariant
from krait.bench.compare.gpvm import GeneralPurposeVmVariant
from krait.bench.compare.payload import build_payload
from krait.bench.compare.process import ProcessVariant
from krait.bench.compare.report import build_document, markdown, page, write_outputs
from krait.bench.compare.unikernel import UnikernelVariant
from krait.config import load_app
from krait.errors import ConfigError
from krait.run import run
from krait.vmm.accel import detect_accel

VARIANTS: dict[str, type[Variant]] = {
    "process": ProcessVariant,
    "container": ContainerVariant,
    "gp-vm": GeneralPurposeVmVariant,
    "unikernel": UnikernelVariant,
}

__all__ = ["VARIANTS", "Settings", "VariantResult", "VariantSkipped", "build_document",
           "markdown", "page", "run_apps", "run_compare", "tool_versions", "write_outputs"]


def tool_versions() -> dict[str, str]:
    """The first line of each tool's version, for the JSON (absent tools are left out)."""
    import platform

    out = {"host_python": platform.python_version()}
    for name, argv in (("qemu", ["qemu-system-x86_64", "--version"]),
                       ("crun", ["crun", "--version"]), ("wrk", ["wrk", "--version"]),
                       ("debootstrap", ["debootstrap", "--version"])):
        if shutil.which(argv[0]):
            text = run(argv, check=False).stdout or ""
            if text.strip():
                out[name] = text.strip().splitlines()[0]
    return out


def run_compare(app_dir: Path, settings: Settings, only: Sequence[str] = tuple(VARIANTS),
                progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Measure the app every way in ``only``; return the JSON document."""
    unknown = set(only) - set(VARIANTS)
    if unknown:
        raise ConfigError(f"unknown variant(s): {', '.join(sorted(unknown))}",
                          hint=f"choose from {', '.join(VARIANTS)}")
    app = load_app(app_dir)
    accel = detect_accel(settings.accel)
    settings = dataclasses.replace(settings, accel=accel.name)
    # Other work on the host skews timings (TCG above all): record how busy it was.
    load = {"before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="krait-compare-") as tmp:
        payload_app = build_payload(app, Path(tmp) / "payload")
        results = [measure(VARIANTS[name](app, payload_app, settings), progress)
                   for name in VARIANTS if name in only]
    load["after"] = list(os.getloadavg())
    params = {"host_load_average_1_5_15min": load, "runs": settings.runs,
              "memory_mib": settings.memory_mib,
              "wrk_seconds": settings.wrk_seconds, "wrk_connections": settings.wrk_connections,
              "variants": list(only)}
    versions = tool_versions()
    versions |= {f"{r.name} kernel": str(r.details["kernel"]) for r in results
                 if "kernel" in r.details}
    return build_document(results, str(app_dir), accel.name, accel.reason, params, versions,
                          name=app.name)


def run_apps(app_dirs: Sequence[Path], settings: Settings, only: Sequence[str] = tuple(VARIANTS),
             progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Measure each app in turn (one JSON document each); every folder is read before the
    first one is measured, so a mistake in the last is not found minutes later."""
    names = [load_app(d).name for d in app_dirs]
    if len(set(names)) < len(names):
        raise ConfigError(f"two app folders have the same name: {', '.join(names)}",
                          hint="each app's JSON is named after it (compare-<name>.json)")
    docs = []
    for app_dir, name in zip(app_dirs, names, strict=True):
        def tell(message: str, name: str = name) -> None:
            progress(f"{name}: {message}")

        docs.append(run_compare(app_dir, settings, only, tell))
    return docs
