"""The libvirt backend against a real libvirtd (started by the session, see _hosts): local,
and over qemu+ssh through a real sshd (the "other host" is this machine reached over SSH).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import libvirt
import pytest

from krait.vmm.booted import booted
from krait.vmm.libvirt import POOL_ENV, LibvirtBackend
from krait.vmm.ports import free_port
from tests.vm.conftest import ctrl_c, krait_cli, krait_running

pytestmark = pytest.mark.usefixtures("no_domains_left")


def answer(port: int, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def pool() -> dict[str, os.stat_result]:
    folder = Path(os.environ[POOL_ENV])
    return {p.name: p.stat() for p in folder.iterdir()}


def test_run_through_local_libvirt_answers_and_leaves_only_the_image(
        libvirt_uri: str, hello_image: Path) -> None:
    port = free_port()
    with krait_running("run", "--backend", "libvirt", "--on", libvirt_uri, "-p",
                       f"{port}:8080", "-e", "SECRET=1", hello_image) as proc:
        assert b"Hello from a krait unikernel" in answer(port)
        conn = libvirt.open(libvirt_uri)
        (domain,) = conn.listAllDomains()
        xml = domain.XMLDesc()
        conn.close()
        # What libvirt was given is krait's VM: microvm, direct boot, read-only layers.
        assert "machine='microvm'" in xml and "<kernel>" in xml
        assert xml.count("<readonly/>") == 3  # base, app, this boot's settings
        assert "SECRET" not in xml  # the settings are a disk, not the command line
        _, err = ctrl_c(proc)
    assert proc.returncode == 0, err
    assert "on libvirt at" in err
    files = pool()
    image = json.loads(krait_cli("inspect", "--json", hello_image).stdout)
    wanted = {f"{image['kernel']['unpacked_sha256']}.vmlinux",
              *(f"{layer['unpacked_sha256']}.erofs" for layer in image["layers"])}
    assert wanted <= set(files), files
    assert {f"{name}.done" for name in wanted} <= set(files)  # each copied whole
    assert not [name for name in files if name.startswith("boot-")]  # this boot's: gone


def test_over_ssh_the_image_is_copied_once(ssh_libvirt_uri: str, hello_image: Path) -> None:
    backend = LibvirtBackend(ssh_libvirt_uri)
    with booted(hello_image, backend=backend) as vm:
        assert vm.vm.pid is None  # libvirtd's child, not krait's
        assert b"Hello" in urllib.request.urlopen(vm.url("/"), timeout=10).read()
    first = pool()
    with booted(hello_image, backend=backend) as vm:
        assert b"Hello" in urllib.request.urlopen(vm.url("/"), timeout=10).read()
    again = pool()
    for name, before in first.items():  # not written again: the same file, untouched
        assert (again[name].st_ino, again[name].st_mtime_ns) == (
            before.st_ino, before.st_mtime_ns), name


def test_a_detached_instance_is_seen_through_libvirt_even_without_its_supervisor(
        libvirt_uri: str, hello_image: Path) -> None:
    port = free_port()
    started = krait_cli("run", "-d", "--name", "lv1", "--backend", "libvirt", "--on",
                        libvirt_uri, "-p", f"{port}:8080", hello_image)
    assert started.returncode == 0, started.stderr
    try:
        assert b"Hello" in answer(port)
        (status,) = json.loads(krait_cli("ps", "--json").stdout)
        assert (status["name"], status["state"], status["backend"]) == (
            "lv1", "running", "libvirt")
        assert status["pid"] is None  # no QEMU of this machine's to point at
        logs = krait_cli("logs", "lv1")
        assert "hello ready on port 8080" in logs.stdout
        # The supervisor dies: the domain still runs, and libvirt (not a pid) says so.
        run = json.loads((Path(status["path"]) / "run.json").read_text())
        os.kill(run["owner_pid"], signal.SIGKILL)
        time.sleep(0.5)
        (status,) = json.loads(krait_cli("ps", "--json").stdout)
        assert status["state"] == "running"
        assert b"Hello" in answer(port)
        stopped = krait_cli("stop", "lv1")
        assert stopped.returncode == 0, stopped.stderr
        conn = libvirt.open(libvirt_uri)
        assert conn.listAllDomains() == []
        conn.close()
        assert not [n for n in pool() if n.startswith("boot-")]  # its settings went too
    finally:
        krait_cli("rm", "-f", "lv1")
    assert json.loads(krait_cli("ps", "--json").stdout) == []


def test_serve_places_instances_on_two_hosts_and_stops_them_all(
        libvirt_uri: str, ssh_libvirt_uri: str, hello_image: Path) -> None:
    port = free_port()
    with krait_running("serve", hello_image, "--port", port, "--on",
                       f"{libvirt_uri},{ssh_libvirt_uri}", "--max", "2", "--per-instance",
                       "1", "--pause", "off") as proc:
        assert b"Hello" in answer(port)
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(4) as pool_:
            answers = list(pool_.map(lambda _: answer(port), range(4)))
        assert all(b"Hello" in a for a in answers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = json.loads(krait_cli("ps", "--json").stdout)
            if len(statuses) == 2:
                break
            time.sleep(0.5)
        hosts = sorted(s["host"] for s in statuses)
        assert hosts == sorted([libvirt_uri, ssh_libvirt_uri]), statuses
        _, err = ctrl_c(proc)
    assert proc.returncode == 0, err
    assert "on 2 hosts" in err


def test_serve_boots_on_the_next_host_when_one_is_down(
        libvirt_uri: str, hello_image: Path, tmp_path: Path) -> None:
    down = f"qemu:///system?socket={tmp_path / 'nobody-here'}"
    port = free_port()
    with krait_running("serve", hello_image, "--port", port, "--on",
                       f"{down},{libvirt_uri}", "--pause", "off") as proc:
        assert b"Hello" in answer(port)  # the first request, not a 503
        (status,) = json.loads(krait_cli("ps", "--json").stdout)
        assert status["host"] == libvirt_uri
        _, err = ctrl_c(proc)
    said = "".join(err.split())  # the log wraps long lines
    assert f"couldnotbooton{down}" in said and "cannotreachlibvirt" in said


def refused(*args: str | Path) -> str:
    """`krait run ARGS` fails as a user should see it: exit 1, a message, no traceback."""
    result = krait_cli("run", *args, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_libvirtd_not_running_or_without_qemu_is_a_clear_error(
        hello_image: Path, tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path / 'nobody-here'}"
    assert f"cannot reach libvirt at {uri}" in refused("--on", uri, hello_image)
    # libvirt's own test driver: a libvirt host with no QEMU behind it.
    mock = refused("--on", "test:///default", hello_image)
    assert "libvirt at test:///default drives TEST, not QEMU" in mock
    assert "install QEMU there" in mock


def test_an_unreachable_or_refusing_ssh_host_is_a_clear_error(
        ssh_libvirt_uri: str, hello_image: Path) -> None:
    nobody = ssh_libvirt_uri.replace(ssh_libvirt_uri.split("@")[1].split("/")[0],
                                     f"127.0.0.1:{free_port()}")
    unreachable = refused("--on", nobody, hello_image)
    assert "cannot reach libvirt at qemu+ssh://root@127.0.0.1:" in unreachable
    assert "ssh 127.0.0.1" in unreachable  # the hint names the host to try
    # A user the host lets in with no key of ours.
    denied = refused("--on", ssh_libvirt_uri.replace("root@", "nobody@"), hello_image)
    assert "cannot reach libvirt at qemu+ssh://nobody@127.0.0.1" in denied
    assert "Permission denied" in denied


def test_what_the_libvirt_backend_cannot_do_yet_is_refused_before_anything_starts(
        libvirt_uri: str, hello_image: Path) -> None:
    assert "cannot carry declared services" in refused(
        "--on", libvirt_uri, "--connect", "db=127.0.0.1:5432", hello_image)
    assert not [n for n in pool() if n.startswith("boot-")]
