"""Instance folders: names, records, and state derived from what is observed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from krait.cli.serve import parse_duration
from krait.errors import ConfigError
from krait.fleet import observe as obs
from krait.fleet.state import (
    InstanceRecord,
    RunRecord,
    State,
    all_instances,
    create_instance,
    new_name,
)
from krait.names import check_name, name_from
from krait.vmm.child import child_ref


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KRAIT_STATE", str(tmp_path / "s"))
    return tmp_path / "s"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line names no instance folder (but says krait)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "krait"])
    yield proc
    proc.kill()
    proc.wait()


def record(name: str = "web-1", owner: str = "run") -> InstanceRecord:
    return InstanceRecord(name=name, image="/i/app.krait", image_name="app",
                          image_digest="d" * 64, memory=48, vcpus=1, accel="tcg",
                          ports=[[8080, 8080]], created=time.time(), owner=owner)


def test_names() -> None:
    # One pattern for instance, serve and image names (krait.names): never a path.
    for good in ("web-1.a_b", "Web", "x" * 63, "0"):
        assert check_name(good) == good
    for bad in ("", "-x", ".hidden", "a/b", "/abs", "..", "../x", "a..b", "x" * 64, "a b",
                "web\n", "caf\u00e9", "\x1b[31m"):
        with pytest.raises(ConfigError, match="not a valid instance name"):
            check_name(bad)
    name = new_name("My App!")
    assert name.startswith("my-app-")
    check_name(name)
    # `krait serve` of an image called My_App names its instances after it.
    assert check_name(f"{name_from('My_App')}-8080-1") == "my_app-8080-1"
    assert check_name(name_from("..a...b..")) == "a.b"


def test_create_and_read_back() -> None:
    folder = create_instance(record())
    got = folder.record()
    assert got is not None
    assert (got.name, got.image_digest, got.ports, got.owner) == (
        "web-1", "d" * 64, [[8080, 8080]], "run")
    assert folder.run() == RunRecord()
    with pytest.raises(ConfigError, match="already exists"):
        create_instance(record())


def test_socket_path_length_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KRAIT_STATE", str(tmp_path / ("x" * 90)))
    with pytest.raises(ConfigError, match="too long"):
        create_instance(record())


def test_never_started_owner_dead_is_stale() -> None:
    folder = create_instance(record())
    folder.write_run(RunRecord(owner_pid=2**22 - 1, ref=child_ref(2**22 - 2, folder.path),
                               ready=time.time()))
    status = obs.observe(folder)
    assert status is not None
    assert status.state == State.STALE
    assert status.pid is None


def test_a_reused_pid_is_not_the_instance(sleeper: subprocess.Popen[bytes]) -> None:
    # After a reboot the recorded pids may belong to other programs: they do not count.
    # (The VM's reference names its process by pid and start time.)
    folder = create_instance(record())
    then = json.dumps({"pid": sleeper.pid, "started": 1.0, "workdir": str(folder.path)})
    folder.write_run(RunRecord(owner_pid=sleeper.pid, ref=then, ready=1.0))
    assert obs.observe(folder).state == State.STALE  # type: ignore[union-attr]


def test_ended_is_exited() -> None:
    folder = create_instance(record())
    folder.write_run(RunRecord(owner_pid=2**22 - 1, ended=True, exit_status=0,
                               exit_reason="the app exited with status 0"))
    status = obs.observe(folder)
    assert status is not None and status.state == State.EXITED and status.exit_status == 0


def test_live_instance_is_running(tmp_path: Path) -> None:
    folder = create_instance(record())
    # A stand-in for QEMU whose command line names the folder, as QEMU's sockets do.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             str(folder.path / "control.sock")])
    while str(folder.path / "control.sock") not in psutil.Process(proc.pid).cmdline():
        time.sleep(0.01)  # until it is Python, not the fork before exec
    try:
        folder.write_run(RunRecord(owner_pid=proc.pid, ref=child_ref(proc.pid, folder.path)))
        status = obs.observe(folder)
        assert status is not None and status.state == State.BOOTING and status.pid == proc.pid
        folder.write_run(RunRecord(owner_pid=proc.pid, ref=child_ref(proc.pid, folder.path),
                                   ready=time.time()))
        status = obs.observe(folder)
        assert status is not None and status.state == State.RUNNING
        assert status.rss_mb is not None and status.rss_mb > 0
    finally:
        proc.kill()
        proc.wait()
    assert obs.observe(folder).state == State.STALE  # type: ignore[union-attr]


def test_clean_orphans_removes_instances_of_dead_serves(
        sleeper: subprocess.Popen[bytes], state: Path) -> None:
    gone = create_instance(record("gone-1", owner="serve"))
    gone.write_run(RunRecord(owner_pid=2**22 - 1))
    alive = create_instance(record("alive-1", owner="serve"))
    alive.write_run(RunRecord(owner_pid=sleeper.pid))
    mine = create_instance(record("mine-1"))  # a `krait run -d` one: left for `krait rm`
    mine.write_run(RunRecord(owner_pid=2**22 - 1))
    serves = state / "serve"
    serves.mkdir()
    (serves / "dead.json").write_text('{"pid": 4194303, "control": "dead.sock"}')
    (serves / "dead.sock").write_text("")
    (serves / "live.json").write_text(f'{{"pid": {sleeper.pid}, "control": "l.sock"}}')
    assert obs.clean_orphans() == ["gone-1"]
    assert sorted(f.name for f in all_instances()) == ["alive-1", "mine-1"]
    assert sorted(p.name for p in serves.iterdir()) == ["live.json"]


def test_an_instance_being_created_is_never_an_orphan(
        sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A `krait ps` that looks while a serve creates an instance (here: right after each
    file is written) must not take it for a dead serve's and remove it."""
    from krait.fleet.state import InstanceDir

    write = InstanceDir.write_record
    def write_then_look(self: InstanceDir, r: InstanceRecord) -> None:
        write(self, r)
        assert obs.clean_orphans() == []
    monkeypatch.setattr(InstanceDir, "write_record", write_then_look)
    folder = create_instance(record("new-1", owner="serve"), RunRecord(owner_pid=sleeper.pid))
    assert folder.path.is_dir() and folder.run().owner_pid == sleeper.pid


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_state_folders_are_private_and_must_be_ours(state: Path) -> None:
    from krait.fleet.state import serve_dir
    from krait.paths import krait_dir

    folder = create_instance(record())
    for path in (state, state / "instances", folder.path, serve_dir()):
        assert path.stat().st_mode & 0o777 == 0o700, path
    loose = state / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert krait_dir(state, "loose", private=True).stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # a folder another user owns (as root we can make one)
        theirs = state / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with pytest.raises(ConfigError, match="another user"):
            krait_dir(state, "theirs", private=True)


@pytest.mark.parametrize("damage", [
    '{"owner_pid": "1"}', '{"owner_pid": -1, "ref": 0}', '{"ref": "{\\"pid\\": -1}"}', "[]",
    '{"restarts": null}',
    '{"ended": 1}', "[" * 100000, "{" + '"x": 1, ' * 200000 + '"y": 2}', "\x00\xff",
    '{"domain": ["a"]}'])
def test_a_damaged_run_record_is_one_stale_instance_not_a_broken_ps(
        damage: str, state: Path) -> None:
    from tests._hostile import krait

    bad = create_instance(record("bad-1"))
    (bad.path / "run.json").write_text(damage)
    good = create_instance(record("good-1"))
    good.write_run(RunRecord(owner_pid=2**22 - 1, ended=True, exit_status=3))
    states = {s.name: s.state for s in obs.list_statuses()}
    assert states == {"bad-1": State.STALE, "good-1": State.EXITED}
    ran = krait("ps", "--json", env={"KRAIT_STATE": str(state)})
    assert ran.returncode == 0, ran.stderr
    assert {s["name"] for s in json.loads(ran.stdout)} == {"bad-1", "good-1"}


def test_a_record_of_another_shape_or_folder_is_no_instance(state: Path) -> None:
    folder = create_instance(record("web-2"))
    for damage in ('{"name": "web-2"}', json.dumps({**asdict(record("other")), "memory": "48"}),
                   json.dumps(asdict(record("other")))):
        (folder.path / "instance.json").write_text(damage)
        assert folder.record() is None and obs.observe(folder) is None
