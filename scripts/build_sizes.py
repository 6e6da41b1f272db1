"""Image size and build time of app folders, each built from a bare copy in a fresh krait
cache (the kernel and uv's download cache shared): `python scripts/build_sizes.py
examples/hello tests/apps/... -o OUT.json`.

Run it with another checkout's sources first on the path (``PYTHONPATH=../base/src``)
to compare two versions of krait on the same apps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.vm helpers (bare copies)

from tests.vm._examples import bare_copy  # noqa: E402

import krait  # noqa: E402
from krait.bench.result import machine_info  # noqa: E402
from krait.config import load_app  # noqa: E402
from krait.image.archive import open_image  # noqa: E402
from krait.image.build import build_image  # noqa: E402
from krait.kernel import build_kernel  # noqa: E402
from krait.paths import cache_dir, kernel_cache_dir, krait_dir  # noqa: E402


def fresh_cache(scratch: Path) -> None:
    """A krait cache of its own (the kernel cache stays where `make kernel` put it; the
    compressed kernel is copied in)."""
    compressed = krait_dir(cache_dir(), "objects", "kernel")
    os.environ["KRAIT_KERNEL_CACHE"] = str(kernel_cache_dir())
    shutil.copytree(compressed, scratch / "cache" / "objects" / "kernel")
    os.environ["KRAIT_CACHE"] = str(scratch / "cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    kernel = build_kernel()
    results = {}
    for folder in args.folders:
        scratch = Path(tempfile.mkdtemp(prefix="krait-sizes-"))
        saved = os.environ.get("KRAIT_CACHE")
        fresh_cache(scratch)
        try:
            app = load_app(bare_copy(folder.resolve(), scratch))
            if app.tls_cert is None and folder.name == "website":
                from krait.image.tls import with_self_signed

                app = with_self_signed(app)
            started = time.perf_counter()
            result = build_image(app, kernel, scratch / f"{app.name}.krait")
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            build_image(app, kernel, scratch / f"{app.name}-again.krait")  # all cached
            again = time.perf_counter() - started
        finally:
            if saved is None:
                os.environ.pop("KRAIT_CACHE", None)
            else:
                os.environ["KRAIT_CACHE"] = saved
        m = open_image(result.path).manifest
        results[folder.name] = {
            "image_bytes": result.path.stat().st_size,
            "layers": {p.name: {"stored_bytes": p.size, "disk_bytes": p.unpacked_size,
                                "files": p.files} for p in m.layers},
            "modules": len(m.modules),
            "build_s": round(seconds, 2), "rebuild_s": round(again, 2),
            "memory_minimum_mib": m.memory.minimum_mib,
            "memory_default_mib": m.memory.default_mib,
        }
        print(f"{folder.name}: {result.path.stat().st_size / 1e6:.2f} MB, build "
              f"{seconds:.1f} s, again {again:.1f} s, memory {m.memory.minimum_mib}/"
              f"{m.memory.default_mib} MiB", file=sys.stderr, flush=True)
    doc = {"benchmark": "build-sizes", "krait": str(Path(krait.__file__).parent),
           "apps": results, "machine": machine_info()}
    args.output.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
