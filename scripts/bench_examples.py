"""Benchmark every example app: `make bench-examples` (or python scripts/bench_examples.py).

For each example: image size, boot to first correct response (N boots), guest memory in
use after boot, and requests/s under a bounded wrk load on loopback. Notes gets a
throwaway PostgreSQL on loopback, as in its test. Writes docs/bench/examples.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.vm helpers (bare copies, PostgreSQL)

from tests.vm._examples import EXAMPLES, bare_copy  # noqa: E402
from tests.vm._postgres import find_pg_bin, start_postgres  # noqa: E402

from krait.bench.apps import Probe, bench_app  # noqa: E402
from krait.bench.result import machine_info  # noqa: E402
from krait.config import load_app  # noqa: E402
from krait.image.build import build_image  # noqa: E402
from krait.kernel import build_kernel  # noqa: E402

PROBES = {
    "hello": Probe("/", b"Hello"),
    "asyncio": Probe("/", b'"keys"'),
    "flask": Probe("/", b"Hello from Flask"),
    "fastapi": Probe("/", b"from FastAPI"),
    "aiohttp": Probe("/", b"Hello from aiohttp"),
    "website": Probe("/", b"This site is a unikernel", guest_port=8443, https=True),
    "notes": Probe("/notes", b"["),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=list(PROBES))
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/bench/examples.json")
    args = parser.parse_args()
    kernel = build_kernel()
    results = {}
    scratch = Path(tempfile.mkdtemp(prefix="krait-bench-examples-"))
    for name in args.names:
        app = load_app(bare_copy(EXAMPLES / name, scratch))
        if name == "website":
            from krait.image.tls import with_self_signed

            app = with_self_signed(app)
        image = build_image(app, kernel, scratch / f"{name}.krait").path
        probe = PROBES[name]
        print(f"== {name}: {image.stat().st_size / 1e6:.2f} MB", file=sys.stderr, flush=True)
        if name == "notes":
            pg_bin = find_pg_bin()
            if pg_bin is None:
                print("   skipped: PostgreSQL is not installed", file=sys.stderr)
                continue
            with start_postgres(pg_bin) as pg:
                # As its test runs it: the image's `db` service (127.0.0.1:5432 inside)
                # pointed at this PostgreSQL; the guest reaches nothing it did not declare.
                probe = Probe(probe.path, probe.expect,
                              env=(("NOTES_DSN", pg.dsn(port=5432)),),
                              connect=(f"db=127.0.0.1:{pg.port}",))
                result = bench_app(image, probe, args.runs, None, args.wrk_seconds,
                                   args.wrk_connections)
        else:
            result = bench_app(image, probe, args.runs, None, args.wrk_seconds,
                               args.wrk_connections)
        data = result.to_dict()
        data.pop("machine")
        data["extra"].pop("wrk_output")
        results[name] = data
        mem = data["extra"]["guest_memory_in_use_mib"].get("median")
        print(f"   boot min/median/max {data['min']}/{data['median']}/{data['max']} s, "
              f"guest memory {mem} MiB, {data['extra']['requests_per_second']} req/s",
              file=sys.stderr, flush=True)
    doc = {"machine": machine_info(), "accelerator": next(
        (r["accelerator"] for r in results.values()), ""), "results": results}
    shutil.rmtree(scratch, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
