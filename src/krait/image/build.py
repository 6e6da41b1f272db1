"""``krait build``: app folder -> NAME.krait."""

from __future__ import annotations

import hashlib
import json
import marshal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait import __version__
from krait.config import AppConfig
from krait.errors import BuildError
from krait.guest import protocol
from krait.image import layers as L
from krait.image.archive import FORMAT, SUFFIX, write_image
from krait.image.closure import LAYERS, GuestFile, kept_modules, plan_files
from krait.image.compile import compile_all, stripped
from krait.image.environment import prepare_python
from krait.image.lock import LockMode
from krait.image.memory import memory_needed
from krait.image.tls import tls_env, tls_files
from krait.image.trace import trace_app
from krait.kernel import Kernel
from krait.paths import cache_dir, write_atomically

Step = Callable[[str], None]


@dataclass
class BuildResult:
    path: Path
    digest: str
    manifest: dict[str, Any]
    cached_layers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def build_image(app: AppConfig, kernel: Kernel, output: Path | None = None,
                step: Step = lambda _: None, lock_mode: LockMode = LockMode.AUTO) -> BuildResult:
    """Install what the app declares, trace it, assemble its layers and write the image."""
    started = time.perf_counter()
    build_python = prepare_python(app, lock_mode, step)
    python = build_python.python
    step(f"tracing {app.entry} with {python}")
    trace = trace_app(app, python, declared_roots=build_python.managed)
    files = plan_files(trace, app.root, app.include, app.sources, app.exclude, app.ignore)
    files = sorted([*files, *tls_files(app)])  # tls-cert / tls-key, baked into the app layer
    by_layer: dict[str, list[GuestFile]] = {name: [] for name in LAYERS}
    for f in files:
        by_layer[f.layer].append(f)

    compiled: dict[str, bytes] = {}

    def content(f: GuestFile) -> bytes:
        if f.how == "pyc":
            return compiled[f.guest]
        if f.how == "elf" and f.layer == "base":
            # Not the venv's: wheels ship stripped objects, edited by patchelf (auditwheel),
            # which objcopy can break ("ELF load command address/offset not page-aligned").
            return stripped(f.host)
        return f.host.read_bytes()

    config = {"name": app.name, "entry": app.entry, "kind": app.kind, "ports": list(app.ports),
              "env": {**tls_env(app), **app.env}, "server": app.server,
              "absent": sorted(trace.absent)}
    # marshal version 2 has no back-references, so the bytes depend only on the values.
    config_bytes = marshal.dumps(json.loads(json.dumps(config, sort_keys=True)), 2)
    extras: dict[str, list[L.Entry]] = {
        "base": L.system_entries(str(trace.executable), str(trace.dynload)),
        "packages": [],
        "app": [L.Entry.file(protocol.CONFIG_PATH, config_bytes)],
    }
    built: list[L.Layer] = []
    cached: list[str] = []
    for name in LAYERS:
        members = by_layer[name]
        if not members and name == "packages":
            continue
        extra = b"".join(e.path.encode() + e.data for e in extras[name])
        # v3: bytecode compiled in a fresh process only; ELF files outside the base layer
        # are no longer stripped.
        salt = b"\0v3"
        key = L.layer_key(name, members, extra + trace.magic.encode() + salt)
        was_built = False

        def make(name: str = name, members: list[GuestFile] = members) -> L.Layer:
            nonlocal was_built
            was_built = True
            step(f"building the {name} layer ({len(members)} files)")
            compiled.update(compile_all(members, python, trace.magic))
            return L.make_layer(name, L.entries_for(members, content) + extras[name])

        built.append(L.cached_layer(key, make))
        if not was_built:
            cached.append(name)
    kernel_blob = _kernel_blob(kernel)
    parts = {"kernel.zst": kernel_blob}
    layer_meta = []
    for layer in built:
        member = f"layers/{layer.name}.cpio.zst"
        parts[member] = layer.blob
        layer_meta.append({"name": layer.name, "member": member, "sha256": layer.digest,
                           "size": len(layer.blob), "cpio_sha256": layer.cpio_digest,
                           "cpio_size": layer.cpio_size, "files": layer.files})
    needs = memory_needed(layer_meta, trace.heap_kib,
                          starts_processes="multiprocessing" in trace.modules)
    boot = app.boot_defaults()
    if boot["memory"] is None:
        boot["memory"] = needs.default_mib
    elif boot["memory"] < needs.minimum_mib:
        raise BuildError(f"memory = \"{boot['memory']}M\" is less than this image needs: at "
                         f"least {needs.minimum_mib} MiB ({needs.explain()})",
                         hint=f"raise `memory` to {needs.default_mib}M or more, or leave it "
                         "out: krait then boots with what the image needs")
    manifest = {
        "format": FORMAT,
        "name": app.name,
        "krait": __version__,
        "settings": app.build_settings(),
        "boot": boot,
        "memory": needs.to_json(),
        "dependencies": {"managed": build_python.managed,
                         "lock_sha256": (hashlib.sha256(build_python.lock.text.encode())
                                         .hexdigest() if build_python.lock else None),
                         "packages": build_python.lock.pins if build_python.lock else {}},
        "interpreter": {"path": str(trace.executable),
                        "version": ".".join(map(str, trace.version))},
        "kernel": {**kernel.identity(), "member": "kernel.zst",
                   "sha256": hashlib.sha256(kernel_blob).hexdigest(), "size": len(kernel_blob),
                   "unpacked_size": kernel.image.stat().st_size},
        "layers": layer_meta,
        "modules": sorted(kept_modules(trace, app.exclude)),
    }
    out = output or app.root / f"{app.name}{SUFFIX}"
    step(f"writing {out}")
    digest = write_image(out, manifest, parts)
    return BuildResult(out, digest, manifest, cached, time.perf_counter() - started)


def _kernel_blob(kernel: Kernel) -> bytes:
    """The compressed kernel, compressed once per kernel (it takes seconds)."""
    cached = cache_dir() / "objects" / "kernel" / f"{kernel.key}.zst"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, L.compress(kernel.image.read_bytes()))
    return cached.read_bytes()
