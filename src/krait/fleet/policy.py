"""When to boot, where to send a connection, when to pause, when to stop: pure functions
of what was observed and the time, so every rule is tested with a fake clock and no VMs.

An idle instance goes through tiers: ready (running) -> paused after ``pause_seconds``
(QEMU stops its CPUs: no guest CPU, resumed in milliseconds by the next connection) ->
stopped after ``idle_seconds`` (scale to zero; the next connection wakes a new instance
from the snapshot).

The gateway (:mod:`krait.fleet.gateway`) observes, calls :func:`plan`, and does what the
:class:`Plan` says; it calls :func:`pick` for each connection that needs an instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from krait.fleet.state import State


@dataclass(frozen=True)
class ScalePolicy:
    max_instances: int = 1
    min_instances: int = 0  # kept running even when idle (0: scale to zero)
    idle_seconds: float = 30.0  # an instance with no connection this long is stopped
    # ... and paused after this long (None: never paused); must be below idle_seconds.
    pause_seconds: float | None = 2.0
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
    state: State  # booting, running, paused or stopping
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
    pause: tuple[str, ...] = field(default=())  # ready instances to pause
    reject_waiting: bool = False  # answer the held connections with an error now


def _live(instances: tuple[InstanceView, ...], generation: int) -> list[InstanceView]:
    return [i for i in instances if i.generation == generation and i.state != State.STOPPING]


def plan(seen: Observed, policy: ScalePolicy) -> Plan:
    """What to do now, from what the gateway observed and the policy: how many instances
    to boot, which to stop and which to pause, and whether to refuse the connections
    that wait. Pure: no I/O, no clock but ``seen.now`` (the gateway does what it says)."""
    current = _live(seen.instances, seen.generation)
    booting = [i for i in current if i.state == State.BOOTING]
    ready = [i for i in current if i.state == State.RUNNING]
    serving = [i for i in current if i.state in (State.RUNNING, State.PAUSED)]
    old = [i for i in seen.instances
           if i.generation != seen.generation and i.state != State.STOPPING]
    in_backoff = (seen.last_failure is not None
                  and seen.now - seen.last_failure < policy.failure_backoff)

    start = 0
    if booting or in_backoff:
        pass  # one boot at a time: concurrent cold-start connections wait for the same one
    elif not current and (seen.waiting or old or policy.min_instances):
        start = 1  # cold start, or the first instance of a new image (replace)
    elif serving and len(current) < policy.max_instances:
        demand = seen.waiting + sum(i.connections for i in serving)
        wanted = max(policy.min_instances, math.ceil(demand / max(1, policy.per_instance)))
        if wanted > len(current):
            start = 1

    stop: list[str] = []
    # Old generation: drain. Once an instance of the new image is ready, each old one
    # stops as soon as its last connection ends.
    if serving:
        drained = (seen.replaced_at is not None
                   and seen.now - seen.replaced_at >= policy.drain_seconds)
        stop += [i.id for i in old if i.connections == 0 or drained]

    def idle_for(i: InstanceView, seconds: float) -> bool:
        return (i.connections == 0 and i.idle_since is not None
                and seen.now - i.idle_since >= seconds)

    # Scale to zero (or to min_instances): idle instances beyond the floor, longest idle
    # first; never while connections are waiting for one.
    if not seen.waiting:
        idle = sorted((i for i in serving if idle_for(i, policy.idle_seconds)),
                      key=lambda i: i.idle_since or 0.0)
        removable = max(0, len(current) - policy.min_instances)
        stop += [i.id for i in idle[:removable]]
    # The tier before that: pause what has been idle a while (and is not being stopped).
    pause: list[str] = []
    if policy.pause_seconds is not None:
        pause = [i.id for i in ready if idle_for(i, policy.pause_seconds) and i.id not in stop]

    reject = bool(seen.waiting) and in_backoff and not current and not [
        i for i in old if i.state in (State.RUNNING, State.PAUSED)]
    return Plan(start=start, stop=tuple(stop), pause=tuple(pause), reject_waiting=reject)


def pick(instances: tuple[InstanceView, ...], generation: int) -> str | None:
    """The instance a new connection goes to: a ready one of the current image with the
    fewest connections, else a paused one (resumed first); while the current image has
    neither, an old image's (a replace in progress)."""
    for gen_ok in (lambda g: g == generation, lambda g: g != generation):
        for state in (State.RUNNING, State.PAUSED):
            found = [i for i in instances if i.state == state and gen_ok(i.generation)]
            if found:
                return min(found, key=lambda i: (i.connections, i.id)).id
    return None
