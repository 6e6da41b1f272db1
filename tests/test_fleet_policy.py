"""The gateway's decisions as pure functions of what was observed and the time."""

from __future__ import annotations

import pytest

from krait.fleet.policy import (
    InstanceView,
    Observed,
    Plan,
    ScalePolicy,
    pick,
    plan,
)
from krait.fleet.restart import Backoff, restart_delay
from krait.fleet.state import State

POLICY = ScalePolicy(max_instances=3, idle_seconds=30, per_instance=2, failure_backoff=5,
                     drain_seconds=60)


def seen(now: float = 100.0, waiting: int = 0, *instances: InstanceView, generation: int = 1,
         last_failure: float | None = None, replaced_at: float | None = None) -> Observed:
    return Observed(now, generation, waiting, tuple(instances), last_failure, replaced_at)


def ready(id: str, connections: int = 0, idle_since: float | None = None,
          generation: int = 1) -> InstanceView:
    return InstanceView(id, generation, State.RUNNING, connections, idle_since)


def test_nothing_to_do_when_nothing_happens() -> None:
    assert plan(seen(), POLICY) == Plan()


def test_first_connection_boots_one() -> None:
    assert plan(seen(waiting=1), POLICY).start == 1


def test_concurrent_cold_start_connections_share_one_boot() -> None:
    # 50 held connections, one boot in flight: no second boot, even with room for 3.
    booting = InstanceView("a", 1, State.BOOTING)
    assert plan(seen(100, 50, booting), POLICY).start == 0


def test_scale_out_when_every_ready_instance_is_full() -> None:
    assert plan(seen(100, 1, ready("a", 2)), POLICY).start == 1
    assert plan(seen(100, 0, ready("a", 3)), POLICY).start == 1


def test_no_scale_out_below_the_per_instance_target() -> None:
    assert plan(seen(100, 0, ready("a", 1)), POLICY).start == 0


def test_scale_out_stops_at_max() -> None:
    full = [ready(x, 5) for x in "abc"]
    assert plan(seen(100, 9, *full), POLICY).start == 0


def test_scale_out_one_boot_at_a_time() -> None:
    assert plan(seen(100, 9, ready("a", 5), InstanceView("b", 1, State.BOOTING)), POLICY).start == 0


def test_idle_instance_stops_after_idle_seconds() -> None:
    inst = ready("a", 0, idle_since=100.0)
    assert plan(seen(129.9, 0, inst), POLICY).stop == ()
    assert plan(seen(130.0, 0, inst), POLICY).stop == ("a",)


def test_instance_with_connections_is_never_idle() -> None:
    assert plan(seen(10_000, 0, ready("a", 1, idle_since=None)), POLICY).stop == ()


def test_idle_instance_kept_while_connections_wait() -> None:
    assert plan(seen(200, 1, ready("a", 0, idle_since=100.0)), POLICY).stop == ()


def test_min_instances_are_kept_and_started() -> None:
    policy = ScalePolicy(max_instances=2, min_instances=1, idle_seconds=30)
    assert plan(seen(), policy).start == 1
    idle = [ready("a", 0, 0.0), ready("b", 0, 10.0)]
    assert plan(seen(100, 0, *idle), policy).stop == ("a",)  # longest idle goes first


def test_failed_boot_backs_off_and_rejects_waiting() -> None:
    decision = plan(seen(101, 3, last_failure=100.0), POLICY)
    assert decision.start == 0
    assert decision.reject_waiting
    later = plan(seen(105.1, 1, last_failure=100.0), POLICY)
    assert later.start == 1 and not later.reject_waiting


def test_no_reject_without_waiting_connections() -> None:
    assert not plan(seen(101, 0, last_failure=100.0), POLICY).reject_waiting


def test_replace_boots_new_generation_and_keeps_old_until_it_is_ready() -> None:
    old = ready("old", 1, generation=1)
    decision = plan(seen(100, 0, old, generation=2, replaced_at=100.0), POLICY)
    assert decision.start == 1
    assert decision.stop == ()
    booting = InstanceView("new", 2, State.BOOTING)
    assert plan(seen(101, 0, old, booting, generation=2, replaced_at=100.0), POLICY) == Plan()


def test_replace_drains_old_instances() -> None:
    new = ready("new", 0, idle_since=101.0, generation=2)
    busy_old, idle_old = ready("o1", 2, generation=1), ready("o2", 0, 50.0, generation=1)
    decision = plan(seen(102, 0, busy_old, idle_old, new, generation=2, replaced_at=100.0),
                    POLICY)
    assert decision.stop == ("o2",)  # the busy one finishes its connections first
    assert decision.start == 0
    serving = ready("new", 1, generation=2)
    late = plan(seen(160, 0, busy_old, serving, generation=2, replaced_at=100.0), POLICY)
    assert late.stop == ("o1",)  # drain_seconds is up


def test_stopping_instances_do_not_count() -> None:
    stopping = InstanceView("a", 1, State.STOPPING)
    assert plan(seen(100, 1, stopping), POLICY).start == 1


def test_pick_prefers_current_generation_then_fewest_connections() -> None:
    instances = (ready("a", 3), ready("b", 1), ready("c", 0, generation=0),
                 InstanceView("d", 1, State.BOOTING))
    assert pick(instances, 1) == "b"
    assert pick((ready("c", 0, generation=0), InstanceView("d", 1, State.BOOTING)), 1) == "c"
    assert pick((InstanceView("d", 1, State.BOOTING),), 1) is None
    assert pick((InstanceView("e", 1, State.STOPPING),), 1) is None


@pytest.mark.parametrize(("policy", "status", "failures", "expected"), [
    ("no", 1, 0, None),
    ("no", None, 0, None),
    ("on-failure", 0, 0, None),
    ("on-failure", 1, 0, 0.5),
    ("on-failure", None, 2, 2.0),
    ("always", 0, 1, 1.0),
    ("always", 3, 20, 30.0),
])
def test_restart_delay(policy: str, status: int | None, failures: int,
                       expected: float | None) -> None:
    assert restart_delay(policy, status, failures, Backoff()) == expected


def test_restart_delay_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError):
        restart_delay("sometimes", 1, 0)


# -- the paused tier ---------------------------------------------------------------------

TIERED = ScalePolicy(max_instances=3, idle_seconds=30, pause_seconds=2, per_instance=2)


def test_idle_past_pause_seconds_is_paused_past_idle_seconds_stopped() -> None:
    assert plan(seen(101, 0, ready("a", 0, idle_since=100)), TIERED).pause == ()
    assert plan(seen(103, 0, ready("a", 0, idle_since=100)), TIERED).pause == ("a",)
    paused = InstanceView("a", 1, State.PAUSED, 0, idle_since=100)
    assert plan(seen(120, 0, paused), TIERED) == Plan()
    assert plan(seen(131, 0, paused), TIERED).stop == ("a",)


def test_busy_instances_are_never_paused_and_none_when_pausing_is_off() -> None:
    assert plan(seen(200, 0, ready("a", 1, idle_since=None)), TIERED).pause == ()
    off = ScalePolicy(idle_seconds=30, pause_seconds=None)
    assert plan(seen(120, 0, ready("a", 0, idle_since=100)), off).pause == ()


def test_a_connection_prefers_a_running_instance_then_a_paused_one() -> None:
    paused = InstanceView("p", 1, State.PAUSED, 0, 100)
    assert pick((paused, ready("r", 3)), 1) == "r"
    assert pick((paused,), 1) == "p"
    # A paused instance of the current image counts as serving: no new boot for it.
    assert plan(seen(100, 1, paused), TIERED).start == 0
