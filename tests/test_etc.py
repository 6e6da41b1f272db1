"""The files of /etc every guest holds: what the C library parses, and nothing else."""

from __future__ import annotations

from pathlib import Path

from krait.image.etc import GROUP, NSSWITCH, PASSWD, etc_entries, hosts
from krait.image.layers import system_entries


def test_passwd_and_group_are_what_libc_parses() -> None:
    users = [line.split(":") for line in PASSWD.splitlines()]
    assert all(len(u) == 7 for u in users)
    # The app runs as root, its home the writable /tmp (PID 1 sets $HOME to it too).
    assert users[0][:6] == ["root", "x", "0", "0", "root", "/tmp"]
    groups = [line.split(":") for line in GROUP.splitlines()]
    assert all(len(g) == 4 for g in groups) and groups[0][:3] == ["root", "x", "0"]
    # No user can log in: there is no shell in the image.
    assert {u[6] for u in users} == {"/usr/sbin/nologin"}


def test_every_guest_root_holds_them() -> None:
    paths = {e.path for e in system_entries("/usr/bin/python3.11", "/usr/lib/dynload")}
    assert {e.path for e in etc_entries()} <= paths
    assert {"/etc/passwd", "/etc/group", "/etc/hosts", "/etc/nsswitch.conf"} <= paths


def test_hosts_holds_localhost_and_exactly_the_declared_names() -> None:
    entry = hosts(("https://api.example.test", "cache=redis.prod:6379", "db=127.0.0.1:5432",
                   "api.example.test:8443"))
    assert entry.data.decode().splitlines() == [
        "127.0.0.1\tlocalhost", "127.77.0.1\tapi.example.test", "127.77.0.2\tredis.prod"]
    assert hosts(()).data == b"127.0.0.1\tlocalhost\n"
    # Nothing but files: an undeclared name is "not known" at once, no DNS is tried.
    assert "hosts: files\n" in NSSWITCH


def test_service_and_protocol_names_come_from_the_build_host(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.write_text("http\t\t80/tcp\t\twww\n")
    entries = {e.path: e.data for e in etc_entries((services, tmp_path / "protocols"))}
    assert entries["/etc/services"] == b"http\t\t80/tcp\t\twww\n"
    assert "/etc/protocols" not in entries  # not on this host: left out
