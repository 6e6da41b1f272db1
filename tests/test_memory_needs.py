"""What an image needs in memory, from what the tracer measured: the same image from
measurements that differ by run-to-run noise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from krait.image.memory import STEP_MIB, memory_needed


def test_hello_just_over_a_step_is_one_image_whatever_the_noise() -> None:
    # Measured on this machine: 12296-12316 KiB in one environment, under 12288 in CI's.
    needs = {memory_needed(heap, 9400, 5 << 20) for heap in (12270, 12288, 12300, 12316)}
    assert len(needs) == 1
    (one,) = needs
    assert one.heap_mib == 12


@given(st.integers(1, 4096), st.integers(-100, 100))
def test_noise_of_100_kib_changes_nothing_away_from_the_middle_of_a_mib(mib: int,
                                                                       noise: int) -> None:
    base = mib * 1024  # a whole MiB: as far from a rounding edge as can be
    assert memory_needed(base + noise, 0, 0).heap_mib == memory_needed(base, 0, 0).heap_mib
    assert memory_needed(base, 0, 0).heap_mib % STEP_MIB == 0
