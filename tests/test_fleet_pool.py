"""The gateway's connection limits, against the pool alone: no sockets, no clock."""

from __future__ import annotations

import pytest

from krait.fleet.pool import Connection, Limits, Pool


def admitted(pool: Pool, client: str = "10.0.0.1", now: float = 0.0) -> Connection:
    conn = pool.admit(client, now)
    assert isinstance(conn, Connection), conn
    return conn


def test_total_connection_cap_refuses_then_admits_once_one_closes() -> None:
    pool = Pool(Limits(max_connections=3, max_per_client=10))
    conns = [admitted(pool, f"10.0.0.{i}") for i in range(3)]
    refusal = pool.admit("10.0.0.9", 0)
    assert isinstance(refusal, str) and "too many connections (3)" in refusal
    pool.close(conns[0])
    admitted(pool, "10.0.0.9")


def test_per_client_cap_leaves_other_clients_alone() -> None:
    pool = Pool(Limits(max_per_client=2))
    first = admitted(pool, "a")
    admitted(pool, "a")
    assert isinstance(pool.admit("a", 0), str)
    admitted(pool, "b")
    pool.close(first)
    admitted(pool, "a")
    assert pool.per_client == {"a": 2, "b": 1}


def test_closing_twice_counts_once() -> None:
    pool = Pool()
    conn = admitted(pool)
    pool.close(conn)
    pool.close(conn)
    assert pool.connections == {} and pool.per_client == {}


def test_waiting_is_bounded_and_assigned_oldest_first_in_one_step() -> None:
    pool = Pool(Limits(max_waiting=3))
    conns = [admitted(pool, str(i)) for i in range(4)]
    for conn in conns[:3]:
        assert pool.enqueue(conn) is None
    refusal = pool.enqueue(conns[3])
    assert refusal is not None and "waiting" in refusal

    slots = iter(["i-1", "i-2"])  # room for two, then nothing
    assigned = pool.assign(lambda: next(slots, None))
    assert [c.id for c in assigned] == [conns[0].id, conns[1].id]
    assert [c.instance for c in assigned] == ["i-1", "i-2"]
    assert list(pool.waiting) == [conns[2].id]  # still first in line
    assert pool.enqueue(conns[3]) is None


def test_a_waiting_connection_that_closes_leaves_the_queue() -> None:
    pool = Pool()
    a, b = admitted(pool, "a"), admitted(pool, "b")
    pool.enqueue(a)
    pool.enqueue(b)
    pool.close(a)
    assert pool.assign(lambda: "i-1") == [b]


def on(pool: Pool, instance: str, client: str, now: float) -> Connection:
    conn = admitted(pool, client, now)
    pool.enqueue(conn)
    pool.assign(lambda: instance)
    return conn


def test_silent_keep_alive_connections_do_not_keep_an_instance_busy() -> None:
    pool = Pool(Limits(busy_grace=5))
    conn = on(pool, "i-1", "a", now=0)
    pool.touch(conn, 1, asked=True)
    pool.touch(conn, 2, asked=False)  # answered; the client keeps the connection open
    assert pool.busy("i-1", 3) == 1
    assert pool.idle_since("i-1", 3) is None
    assert pool.busy("i-1", 7.5) == 0
    assert pool.idle_since("i-1", 7.5) == 2


def test_a_request_waiting_for_a_slow_answer_stays_busy() -> None:
    pool = Pool(Limits(busy_grace=5))
    conn = on(pool, "i-1", "a", now=0)
    pool.touch(conn, 1, asked=True)  # the app computes for minutes
    assert pool.busy("i-1", 600) == 1
    pool.touch(conn, 601, asked=False)
    assert pool.busy("i-1", 700) == 0


def test_release_and_busy_count_only_the_instance_asked_about() -> None:
    pool = Pool()
    a = on(pool, "i-1", "a", now=0)
    on(pool, "i-2", "b", now=0)
    assert pool.busy("i-1", 1) == 1 and pool.busy("i-2", 1) == 1
    pool.release(a)
    assert pool.busy("i-1", 1) == 0 and pool.idle_since("i-1", 1) is None
    assert pool.on("i-2")[0].client == "b"


@pytest.mark.parametrize("max_per_client", [1, 5])
def test_caps_hold_over_many_admits_and_closes(max_per_client: int) -> None:
    pool = Pool(Limits(max_connections=20, max_per_client=max_per_client))
    open_: list[Connection] = []
    for step in range(200):
        client = f"c{step % 7}"
        got = pool.admit(client, step)
        if isinstance(got, Connection):
            open_.append(got)
        if step % 3 == 0 and open_:
            pool.close(open_.pop(0))
        assert len(pool.connections) <= 20
        assert all(n <= max_per_client for n in pool.per_client.values())
        assert sum(pool.per_client.values()) == len(pool.connections)


def test_the_open_file_limit_is_raised_or_the_caps_lowered_to_fit() -> None:
    import subprocess
    import sys

    child = """
import resource
from krait.fleet.pool import Limits
from krait.fleet.serve import file_limit_for
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
assert file_limit_for(Limits(max_connections=100)).max_connections == 100
assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 2 * 100 + 256
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))  # a hard limit below the need
fitted = file_limit_for(Limits(max_connections=1000, max_per_client=256))
assert (fitted.max_connections, fitted.max_per_client) == (22, 22), fitted
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
