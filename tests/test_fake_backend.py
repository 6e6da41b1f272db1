"""A fourth backend, added the way one would be: its own module (here, this file) and one
entry in the registry. The fleet (serve's driver, `krait ps`, orphans cleaned up) runs its
instances without knowing which backend it is: it asks the backend, by the reference the
backend made."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from krait.fleet.driver import ImageRef, VmDriver, hosts_for
from krait.fleet.observe import clean_orphans, list_statuses
from krait.fleet.state import State, all_instances
from krait.vmm import backends
from krait.vmm.base import Backend, Vm, VmResult, VmSpec, VmStatus
from krait.vmm.launch import RunOptions

from ._manifests import crafted

_numbers = itertools.count(1)


class FakeVm(Vm):
    """Ready at once; ends when asked."""

    def __init__(self, spec: VmSpec, ref: str) -> None:
        self.spec, self.ref = spec, ref
        self.started_at = self.ready_at = 0.0
        self.timeline = {}
        self.ended: VmResult | None = None

    def alive(self) -> bool:
        return self.ended is None

    def console_tail(self) -> str:
        return "fake console"

    def wait_ready(self, timeout: float) -> bool:
        return self.ended is None

    def request_stop(self) -> None:
        self.ended = VmResult(0, False, 0, "", "the app exited with status 0")

    def wait(self, timeout: float | None = None) -> VmResult | None:
        return self.ended

    def kill(self) -> None:
        self.ended = self.ended or VmResult(None, False, -9, "", "the VM was stopped")


class FakeBackend(Backend):
    """Keeps its VMs in a dict: the reference is the key."""

    name = "fake"
    vms: ClassVar[dict[str, FakeVm]] = {}

    def command(self, spec: VmSpec) -> list[str]:
        return ["fake-vmm", spec.name]

    def start(self, spec: VmSpec, on_console: Callable[[str], None] | None = None) -> Vm:
        vm = FakeVm(spec, f"fake-{next(_numbers)}")
        self.vms[vm.ref] = vm
        return vm

    def status(self, ref: str, detail: bool = True) -> VmStatus:
        vm = self.vms.get(ref)
        return VmStatus(running=vm is not None and vm.alive())

    def remove(self, ref: str) -> None:
        vm = self.vms.pop(ref, None)
        if vm is not None:
            vm.kill()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
               ) -> Iterator[type[FakeBackend]]:
    monkeypatch.setenv("KRAIT_STATE", str(tmp_path / "state"))  # its instances alone
    monkeypatch.setitem(backends.BACKENDS, "fake", lambda uri: FakeBackend())
    FakeBackend.vms = {}
    yield FakeBackend


def test_the_fleet_runs_a_backend_it_does_not_know(registered: type[FakeBackend],
                                                   tmp_path: Path) -> None:
    image = ImageRef.open(crafted(tmp_path / "app.krait"), 1)
    driver = VmDriver(RunOptions(), use_snapshots=False, hosts=hosts_for("fake", ()))

    async def scenario() -> None:
        handle = await driver.boot(image, "app-1")
        assert driver.alive(handle)
        # `krait ps` sees it running: it asked the fake backend, by its reference.
        (status,) = list_statuses()
        assert (status.name, status.state, status.backend, status.where) == (
            "app-1", State.RUNNING, "fake", "fake")
        await driver.stop(handle)
        await driver.close()

    asyncio.run(scenario())
    assert all(not vm.alive() for vm in registered.vms.values())


def test_an_orphan_of_a_backend_is_removed_by_its_backend(registered: type[FakeBackend],
                                                          tmp_path: Path) -> None:
    image = ImageRef.open(crafted(tmp_path / "app.krait"), 1)
    driver = VmDriver(RunOptions(), use_snapshots=False, hosts=hosts_for("fake", ()))
    asyncio.run(driver.boot(image, "app-2"))
    (folder,) = all_instances()
    run = folder.run()
    assert run.ref is not None and registered.vms[run.ref].alive()
    run.owner_pid = 2**22 - 1  # its serve died without stopping it
    folder.write_run(run)
    assert clean_orphans() == ["app-2"]
    assert run.ref not in registered.vms and not all_instances()
    driver.executor.shutdown()
