"""When to boot, where to send a connection, when to stop: pure functions of what was
observed and the time, so every rule is tested with a fake clock and no VMs.

The gateway (:mod:`krait.fleet.gateway`) observes, calls :func:`plan`, and does what the
:class:`Plan` says; it calls :func:`pick` for each connection that needs an instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BOOTING, READY, STOPPING = "booting", "ready", "stopping"


@dataclass(frozen=True)
class ScalePolicy:
    max_instances: int = 1
    min_instances: int = 0  # kept running even when idle (0: scale to zero)
    idle_seconds: float = 30.0  # an instance with no connection this long is stopped
    # Connections one instance should carry before another is booted.
    per_instance: int = 10
    # After a failed boot, answer at once (503) for this long instead of booting again.
    failure_backoff: float = 5.0
    # After a replace, an old instance still carrying connections is stopped anyway after
    # this long (long-lived keep-alive connections would otherwise keep it forever).
    drain_seconds: float = 30.0


@dataclass(frozen=True)
class InstanceView:
    id: str
    generation: int  # which image: the gateway bumps it on replace
    state: str  # booting | ready | stopping
    connections: int = 0
    idle_since: float | None = None  # when connections last dropped to 0 (or it got ready)


@dataclass(frozen=True)
class Observed:
    now: float
    generation: int  # the image new connections should get
    waiting: int  # connections held until an instance is ready
    instances: tuple[InstanceView, ...] = ()
    last_failure: float | None = None  # when a boot of this generation last failed
    replaced_at: float | None = None  # when the current generation replaced the previous


@dataclass(frozen=True)
class Plan:
    start: int = 0  # instances of the current generation to boot
    stop: tuple[str, ...] = field(default=())  # instances to stop (gracefully)
    reject_waiting: bool = False  # answer the held connections with an error now


def _live(instances: tuple[InstanceView, ...], generation: int) -> list[InstanceView]:
    return [i for i in instances if i.generation == generation and i.state != STOPPING]


def plan(seen: Observed, policy: ScalePolicy) -> Plan:
    current = _live(seen.instances, seen.generation)
    booting = [i for i in current if i.state == BOOTING]
    ready = [i for i in current if i.state == READY]
    old = [i for i in seen.instances if i.generation != seen.generation and i.state != STOPPING]
    in_backoff = (seen.last_failure is not None
                  and seen.now - seen.last_failure < policy.failure_backoff)

    start = 0
    if booting or in_backoff:
        pass  # one boot at a time: concurrent cold-start connections wait for the same one
    elif not current and (seen.waiting or old or policy.min_instances):
        start = 1  # cold start, or the first instance of a new image (replace)
    elif ready and len(current) < policy.max_instances:
        demand = seen.waiting + sum(i.connections for i in ready)
        wanted = max(policy.min_instances, math.ceil(demand / max(1, policy.per_instance)))
        if wanted > len(current):
            start = 1

    stop: list[str] = []
    # Old generation: drain. Once an instance of the new image is ready, each old one
    # stops as soon as its last connection ends.
    if ready:
        drained = (seen.replaced_at is not None
                   and seen.now - seen.replaced_at >= policy.drain_seconds)
        stop += [i.id for i in old if i.connections == 0 or drained]
    # Scale to zero (or to min_instances): idle instances beyond the floor, longest idle
    # first; never while connections are waiting for one.
    if not seen.waiting:
        idle = sorted((i for i in ready if i.connections == 0 and i.idle_since is not None
                       and seen.now - i.idle_since >= policy.idle_seconds),
                      key=lambda i: i.idle_since or 0.0)
        removable = max(0, len(current) - policy.min_instances)
        stop += [i.id for i in idle[:removable]]

    reject = bool(seen.waiting) and in_backoff and not current and not [
        i for i in old if i.state == READY]
    return Plan(start=start, stop=tuple(stop), reject_waiting=reject)


def pick(instances: tuple[InstanceView, ...], generation: int) -> str | None:
    """The instance a new connection goes to: a ready one of the current image with the
    fewest connections; while none is ready, an old image's (a replace in progress)."""
    for gen_ok in (lambda g: g == generation, lambda g: g != generation):
        ready = [i for i in instances if i.state == READY and gen_ok(i.generation)]
        if ready:
            return min(ready, key=lambda i: (i.connections, i.id)).id
    return None
