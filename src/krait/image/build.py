"""``krait build``: app folder -> NAME.krait."""

from __future__ import annotations

import hashlib
import json
import marshal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from krait import __version__
from krait.config import AppConfig
from krait.errors import BuildError
from krait.guest import protocol
from krait.image import layers as L
from krait.image.archive import SUFFIX, write_image
from krait.image.closure import LAYERS, GuestFile, Plan, kept_modules, plan_files
from krait.image.compile import compile_all, stripped
from krait.image.context import app_files, check_shadowing, import_roots
from krait.image.environment import prepare_python
from krait.image.etc import hosts
from krait.image.lock import LockMode
from krait.image.manifest import BootDefaults, Dependencies, KernelIdentity, Manifest, Part
from krait.image.memory import memory_needed
from krait.image.tls import tls_env, tls_files, trust_store
from krait.image.trace import Trace, trace_app
from krait.kernel import Kernel, kernel_format
from krait.paths import cache_dir, krait_dir, write_atomically

Step = Callable[[str], None]


@dataclass
class BuildResult:
    path: Path
    digest: str
    manifest: Manifest
    cached_layers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # for the user, after the build


def image_path(app: AppConfig, output: Path | None = None) -> Path:
    """Where the image of ``app`` is written: ``output``, or NAME.krait in its folder."""
    return output or app.root / f"{app.name}{SUFFIX}"


def build_image(app: AppConfig, kernel: Kernel, output: Path | None = None,
                step: Step = lambda _: None, lock_mode: LockMode = LockMode.AUTO,
                signing_key: Ed25519PrivateKey | None = None) -> BuildResult:
    """Install what the app declares, trace it, assemble its layers and write the image."""
    started = time.perf_counter()
    build_python = prepare_python(app, lock_mode, step)
    python = build_python.python
    app_folder = app_files(app.root, app.ignore, app.exclude)
    shadowing = check_shadowing(app_folder, import_roots(app.root))
    step(f"tracing {app.entry} with {python}")
    trace = trace_app(app, python, build_python.managed, app_folder)
    plan = plan_files(trace, app.root, app_folder, app.include, app.sources, app.exclude)
    notes = [*shadowing, *_plan_notes(plan, trace)]
    versions = build_python.lock.pins if build_python.lock else {}
    trust, trusted, trust_env = trust_store(app, plan.files, set(trace.modules), versions)
    # tls-cert / tls-key and the trusted certificates, in the app layer
    files = sorted([*plan.files, *tls_files(app), *trusted])
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
              "paths": list(import_roots(app.root)),
              "env": {**tls_env(app), **trust_env, **app.env}, "server": app.server,
              "max_body": app.max_body,
              "absent": sorted(trace.absent)}
    # marshal version 2 has no back-references, so the bytes depend only on the values.
    config_bytes = marshal.dumps(json.loads(json.dumps(config, sort_keys=True)), 2)
    extras: dict[str, list[L.Entry]] = {
        "base": L.system_entries(str(trace.executable), str(trace.dynload)),
        "packages": [],
        "app": [L.Entry.file(protocol.CONFIG_PATH, config_bytes), hosts(app.connect)],
    }
    built: list[L.Layer] = []
    cached: list[str] = []
    for name in LAYERS:
        members = by_layer[name]
        if not members and name == "packages":
            continue
        extra = b"".join(e.path.encode() + e.data for e in extras[name])
        key = L.layer_key(name, members, extra + trace.magic.encode())
        was_built = False

        def make(name: str = name, members: list[GuestFile] = members) -> L.Layer:
            nonlocal was_built
            was_built = True
            step(f"building the {name} layer ({len(members)} files)")
            pyc, failed = compile_all(members, python, trace.magic)
            compiled.update(pyc)
            for source, why in sorted(failed.items()):
                notes.append(f"left out {source}: it does not compile "
                             f"({(why.splitlines() or [''])[0]})")
            kept = [f for f in members if f.how != "pyc" or f.guest in compiled]
            return L.make_layer(name, L.entries_for(kept, content) + extras[name])

        built.append(L.cached_layer(key, make))
        if not was_built:
            cached.append(name)
    kernel_blob, kernel_digest = _kernel_blob(kernel)
    parts = {"kernel.zst": kernel_blob}
    layers = []
    for layer in built:
        member, listing = f"layers/{layer.name}.erofs.zst", f"layers/{layer.name}.files.json"
        parts[member], parts[listing] = layer.blob, layer.listing
        layers.append(Part(layer.name, "disk", "erofs", member, layer.digest, len(layer.blob),
                           layer.disk_digest, layer.disk_size, layer.files, layer.mount,
                           listing, hashlib.sha256(layer.listing).hexdigest()))
    needs = memory_needed(trace.heap_kib, trace.mapped_kib,
                          sum(layer.disk_size for layer in built),
                          starts_processes="multiprocessing" in trace.modules)
    boot = app.boot_defaults()
    if boot["memory"] is None:
        boot["memory"] = needs.default_mib
    elif boot["memory"] < needs.minimum_mib:
        raise BuildError(f"memory = \"{boot['memory']}M\" is less than this image needs: at "
                         f"least {needs.minimum_mib} MiB ({needs.explain()})",
                         hint=f"raise `memory` to {needs.default_mib}M or more, or leave it "
                         "out: krait then boots with what the image needs")
    lock = build_python.lock
    manifest = Manifest(
        name=app.name, krait=__version__, settings=app.build_settings(),
        boot=BootDefaults(**boot), memory=needs,
        interpreter={"path": str(trace.executable),
                     "version": ".".join(map(str, trace.version))},
        kernel=Part("kernel", "kernel", kernel_format(kernel.image), "kernel.zst",
                    hashlib.sha256(kernel_blob).hexdigest(), len(kernel_blob), kernel_digest,
                    kernel.image.stat().st_size),
        kernel_identity=KernelIdentity(kernel.version, kernel.key),
        layers=tuple(layers),
        modules=tuple(sorted(kept_modules(trace, app.exclude))),
        dependencies=Dependencies(
            build_python.managed,
            hashlib.sha256(lock.text.encode()).hexdigest() if lock else None,
            lock.pins if lock else {}),
        trust=trust)
    out = image_path(app, output)
    step(f"writing {out}")
    # A TLS key is in the app layer: the image is as secret as the key.
    digest = write_image(out, manifest, parts, 0o600 if app.tls_key else 0o644,
                         signing_key)
    return BuildResult(out, digest, manifest, cached, time.perf_counter() - started, notes)


def _plan_notes(plan: Plan, trace: Trace) -> list[str]:
    notes = []
    if trace.distributions:
        notes.append(f"packages, each whole: {', '.join(sorted(trace.distributions))}")
    if plan.left_out:
        notes.append("left out of them: " + ", ".join(
            f"{rule} {size / 2**20:.1f} MB" for rule, size in sorted(plan.left_out.items())))
    notes += [f"{path} needs a shared library this host does not have: it cannot be "
              "imported here or in the image" for path in plan.unloadable]
    return notes


def _kernel_blob(kernel: Kernel) -> tuple[bytes, str]:
    """The compressed kernel and the digest of the kernel itself, worked out once per
    kernel (compressing takes seconds)."""
    folder = krait_dir(cache_dir(), "objects", "kernel")
    blob, digest = folder / f"{kernel.key}.zst", folder / f"{kernel.key}.sha256"
    if not (blob.exists() and digest.exists()):
        data = kernel.image.read_bytes()
        write_atomically(blob, L.compress(data))
        write_atomically(digest, hashlib.sha256(data).hexdigest().encode())
    return blob.read_bytes(), digest.read_text()
