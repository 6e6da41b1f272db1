"""A/B: is one image really faster than another (to boot, or serving requests through
`krait serve`), on a noisy machine?

Runs of A and B are interleaved (ABAB..., so drift in the machine's load hits both
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


def verdict(a: Sequence[float], b: Sequence[float], p: float,
            higher_is_better: bool = False) -> str:
    ma, mb = statistics.median(a), statistics.median(b)
    if p >= ALPHA or abs(mb - ma) < NOISE * ma:
        return "no real difference"
    return "B is faster" if (mb > ma) == higher_is_better else "A is faster"


def compare(a: Sequence[float], b: Sequence[float], unit: str = "s",
            higher_is_better: bool = False) -> dict[str, Any]:
    p = permutation_p(a, b)
    ma, mb = statistics.median(a), statistics.median(b)
    return {f"median_difference_{unit}": round(mb - ma, 4), "b_over_a": round(mb / ma, 3),
            "p_value": round(p, 4), "noise_threshold": NOISE, "alpha": ALPHA,
            "verdict": verdict(a, b, p, higher_is_better)}


def bench_ab(a: Path, b: Path, measure: Callable[[Path], float], runs: int = 10,
             progress: Callable[[str], None] = lambda _: None,
             accelerator: str = "", what: str = "boot-to-first-200", unit: str = "s",
             higher_is_better: bool = False) -> dict[str, Any]:
    """Interleave ``runs`` measures of each image (``measure(image)``: seconds to boot,
    by default; say ``what`` else, in which ``unit``, and which way is better)."""
    samples: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(runs):
        order = (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))
        for label, image in order:
            value = round(measure(image), 4)
            samples[label].append(value)
            progress(f"{label.upper()} run {len(samples[label])}/{runs}: {value:.3f} {unit}")
    return {"benchmark": f"ab-{what}", "unit": unit, "accelerator": accelerator,
            "runs": runs, "order": "interleaved, ABBA",
            "a": {"image": str(a), "samples": samples["a"], **summarize(samples["a"])},
            "b": {"image": str(b), "samples": samples["b"], **summarize(samples["b"])},
            **compare(samples["a"], samples["b"], unit, higher_is_better),
            "machine": machine_info()}
