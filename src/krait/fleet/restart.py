"""Restart policy: whether, and after how long, a supervisor brings an instance back.

A pure function of what happened, so it is tested without VMs or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("no", "on-failure", "always")


@dataclass(frozen=True)
class Backoff:
    first: float = 0.5  # seconds before the first restart
    factor: float = 2.0
    limit: float = 30.0
    # A run that stayed up this long was healthy: the next failure starts the backoff over.
    healthy_after: float = 10.0


def restart_delay(policy: str, exit_status: int | None, failures: int,
                  backoff: Backoff = Backoff()) -> float | None:
    """Seconds to wait before restarting, or None to stay down.

    ``exit_status`` is the app's (None when it never reported one: a kernel panic, a
    killed QEMU); ``failures`` counts the restarts since the last healthy run.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown restart policy {policy!r}")
    if policy == "no":
        return None
    if policy == "on-failure" and exit_status == 0:
        return None
    return min(backoff.limit, backoff.first * backoff.factor ** failures)
