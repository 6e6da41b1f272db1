"""A/B boots of two images made by two different krait versions (e.g. today's disk
layers against the initramfs image of an earlier commit), interleaved in one run.

    python scripts/ab_versions.py --a "PYTHONPATH=/tmp/old/src python -m krait.cli" \
        --a-image /tmp/hello-initramfs.krait --b "krait" --b-image hello.krait -n 10

Each boot is one `krait bench boot IMAGE -n 1` of that version (the measurement is
krait's own: QEMU start to the first 200); the statistics are `krait bench ab`'s. Each
side also gets its boots' steps (the guest's own timeline, medians): a change to one
step shows there even when the whole boot's noise hides it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from krait.bench.ab import bench_ab  # noqa: E402
from krait.bench.timeline import rows  # noqa: E402


def krait_boot(command: str, memory: int | None,  # type: ignore[no-untyped-def]
               timelines: list[dict[str, float]]):
    words = shlex.split(command)
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value

    def boot(image: Path) -> float:
        argv = [*words, "bench", "boot", str(image), "-n", "1"]
        if memory:
            argv += ["-m", str(memory)]
        out = json.loads(subprocess.run(argv, env=env, capture_output=True, text=True,
                                        check=True).stdout)
        timelines.extend(out["extra"].get("timelines", []))
        return float(out["samples"][0])

    return boot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the command that runs version A's krait")
    parser.add_argument("--a-image", type=Path, required=True)
    parser.add_argument("--b", required=True, help="the command that runs version B's krait")
    parser.add_argument("--b-image", type=Path, required=True)
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("-m", "--memory", type=int, default=None)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    timelines: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    boots = {args.a_image: krait_boot(args.a, args.memory, timelines["a"]),
             args.b_image: krait_boot(args.b, args.memory, timelines["b"])}
    doc = bench_ab(args.a_image, args.b_image, lambda image: boots[image](image), args.runs,
                   progress=lambda m: print(m, file=sys.stderr, flush=True))
    doc["a"]["krait"], doc["b"]["krait"] = args.a, args.b
    for side in "ab":
        doc[side]["steps"] = rows(timelines[side])
    doc["memory_mib"] = args.memory
    text = json.dumps(doc, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    print(f"A {doc['a']['median']} s, B {doc['b']['median']} s: B/A {doc['b_over_a']}, "
          f"p {doc['p_value']}: {doc['verdict']}", file=sys.stderr)
    # Paired by step: a version whose guest reports a step the other does not has a row
    # of its own, not the other's next step.
    took = {side: {r["step"]: r for r in doc[side]["steps"]} for side in "ab"}
    for step in [*took["a"], *(s for s in took["b"] if s not in took["a"])]:
        a, b = took["a"].get(step), took["b"].get(step)
        what = (took["a"] | took["b"])[step]["what"]
        print(f"  {what:45} A {a['takes_s'] if a else '-':>6} s  "
              f"B {b['takes_s'] if b else '-':>6} s", file=sys.stderr)


if __name__ == "__main__":
    main()
