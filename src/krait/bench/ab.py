"""A/B: is one image really faster to boot than another, on a noisy machine?

Boots of A and B are interleaved (ABAB..., so drift in the machine's load hits both
alike), and the difference of their medians is put to a permutation test, as
Firecracker's ``tools/ab_test.py`` does: how often would shuffling the labels give a
difference at least as large? A small p-value and a difference above the noise
threshold together say the difference is real.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from krait.bench.result import machine_info, summarize

NOISE = 0.05  # differences below 5 % of A's median are noise here, whatever p says
ALPHA = 0.05


def permutation_p(a: Sequence[float], b: Sequence[float], rounds: int = 10000,
                  seed: int = 0) -> float:
    """Two-sided p-value of the difference of medians under label shuffling."""
    observed = abs(statistics.median(b) - statistics.median(a))
    pooled = [*a, *b]
    rng = random.Random(seed)
    at_least = 0
    for _ in range(rounds):
        rng.shuffle(pooled)
        x, y = pooled[:len(a)], pooled[len(a):]
        if abs(statistics.median(y) - statistics.median(x)) >= observed - 1e-12:
            at_least += 1
    return (at_least + 1) / (rounds + 1)


def verdict(a: Sequence[float], b: Sequence[float], p: float) -> str:
    ma, mb = statistics.median(a), statistics.median(b)
    if p >= ALPHA or abs(mb - ma) < NOISE * ma:
        return "no real difference"
    return "B is faster" if mb < ma else "A is faster"


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    p = permutation_p(a, b)
    ma, mb = statistics.median(a), statistics.median(b)
    return {"median_difference_s": round(mb - ma, 4), "b_over_a": round(mb / ma, 3),
            "p_value": round(p, 4), "noise_threshold": NOISE, "alpha": ALPHA,
            "verdict": verdict(a, b, p)}


def bench_ab(a: Path, b: Path, boot: Callable[[Path], float], runs: int = 10,
             progress: Callable[[str], None] = lambda _: None,
             accelerator: str = "") -> dict[str, Any]:
    """Interleave ``runs`` boots of each image (``boot(image)`` returns seconds)."""
    samples: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(runs):
        order = (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))
        for label, image in order:
            seconds = round(boot(image), 4)
            samples[label].append(seconds)
            progress(f"{label.upper()} run {len(samples[label])}/{runs}: {seconds:.3f}s")
    return {"benchmark": "ab-boot-to-first-200", "unit": "s", "accelerator": accelerator,
            "runs": runs, "order": "interleaved, ABBA",
            "a": {"image": str(a), "samples": samples["a"], **summarize(samples["a"])},
            "b": {"image": str(b), "samples": samples["b"], **summarize(samples["b"])},
            **compare(samples["a"], samples["b"]), "machine": machine_info()}
