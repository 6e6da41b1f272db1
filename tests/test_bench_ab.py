"""krait bench ab's statistics and the boot timeline's table, without booting."""

from __future__ import annotations

from pathlib import Path

from krait.bench import timeline
from krait.bench.ab import bench_ab, compare, permutation_p


def test_the_same_distribution_is_no_real_difference() -> None:
    a = [1.00, 1.10, 0.95, 1.05, 1.02, 0.98, 1.07, 1.01]
    b = [1.03, 0.97, 1.08, 0.99, 1.04, 1.00, 1.06, 0.96]
    assert permutation_p(a, b) > 0.3
    assert compare(a, b)["verdict"] == "no real difference"


def test_a_clear_difference_is_real_and_named() -> None:
    a = [1.40, 1.45, 1.38, 1.50, 1.42, 1.47, 1.41, 1.44]
    b = [0.90, 0.95, 0.88, 0.93, 0.91, 0.97, 0.89, 0.92]
    result = compare(a, b)
    assert result["p_value"] < 0.01
    assert result["verdict"] == "B is faster"
    assert compare(b, a)["verdict"] == "A is faster"


def test_where_more_is_better_the_larger_median_is_the_faster() -> None:
    a = [300.0, 310.0, 305.0, 298.0, 302.0, 307.0]  # requests/s
    b = [600.0, 590.0, 610.0, 605.0, 598.0, 602.0]
    result = compare(a, b, unit="rps", higher_is_better=True)
    assert result["verdict"] == "B is faster" and result["median_difference_rps"] > 290
    assert compare(b, a, unit="rps", higher_is_better=True)["verdict"] == "A is faster"
    runs = iter(range(100))
    doc = bench_ab(Path("a"), Path("b"),
                   lambda image: (300.0 if image.name == "a" else 600.0) + next(runs),
                   runs=6, what="rps", unit="rps", higher_is_better=True)
    assert doc["benchmark"] == "ab-rps" and doc["unit"] == "rps"
    assert doc["verdict"] == "B is faster" and 1.9 < doc["b_over_a"] < 2.0


def test_a_tiny_difference_is_noise_even_when_consistent() -> None:
    a = [1.000, 1.001, 1.002, 1.001, 1.000, 1.002]
    b = [x + 0.01 for x in a]  # 1 % slower every time: below the noise threshold
    assert compare(a, b)["verdict"] == "no real difference"


def test_boots_are_interleaved() -> None:
    seen: list[str] = []

    def boot(image: Path) -> float:
        seen.append(image.name)
        return 1.0 if image.name == "a" else 0.5

    doc = bench_ab(Path("a"), Path("b"), boot, runs=3)
    assert seen == ["a", "b", "b", "a", "a", "b"]
    assert doc["a"]["samples"] == [1.0, 1.0, 1.0] and doc["b"]["median"] == 0.5


def test_timeline_rows_are_medians_of_each_step() -> None:
    boots = [{"qemu_to_kernel": 0.1, "exec": 0.6, "main": 0.8, "ready": 1.2,
              "first_answer": 1.3},
             {"qemu_to_kernel": 0.2, "exec": 0.7, "main": 1.0, "ready": 1.4,
              "first_answer": 1.5}]
    table = {r["step"]: r for r in timeline.rows(boots)}
    assert table["exec"]["ends_s"] == 0.65 and table["exec"]["takes_s"] == 0.5
    assert table["main"]["takes_s"] == 0.25
    assert "mounted" not in table  # not reported: no row
    assert table["ready"]["takes_s"] == 0.4  # from the step before it that was reported
