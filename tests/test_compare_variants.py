"""`krait bench compare`: skipping with a reason, and each variant's pure parts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krait.bench.compare import VARIANTS, Settings, VariantSkipped, _common, rootfs
from krait.bench.compare.base import Running, Variant, measure
from krait.bench.compare.container import ContainerVariant, crun_argv, oci_config
from krait.bench.compare.gpvm import gpvm_command
from krait.bench.compare.payload import LAUNCHER, SERVER, SERVERS, WRAPPER, build_payload
from krait.config import load_app
from krait.errors import ConfigError, VmError

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello"


class FakeVariant(Variant):
    name = "fake"
    label = "fake"
    started_count = 0

    def prepare(self) -> None:
        raise VariantSkipped("no fake hypervisor here", hint="install one")

    def artifact_bytes(self) -> int:
        return 1

    def surface(self) -> dict[str, int | None]:
        return {}

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        FakeVariant.started_count += 1
        yield Running()


@pytest.fixture
def hello_payload(tmp_path: Path) -> tuple:
    app = load_app(HELLO)
    return app, build_payload(app, tmp_path / "payload")


def test_a_missing_prerequisite_skips_with_its_reason(hello_payload: tuple) -> None:
    app, payload_app = hello_payload
    result = measure(FakeVariant(app, payload_app, Settings(runs=2)))
    assert result.skipped == "no fake hypervisor here (install one)"
    assert FakeVariant.started_count == 0
    assert result.boot_s == [] and result.artifact_bytes is None  # never a fake number


class FailingVariant(FakeVariant):
    def prepare(self) -> None:
        pass

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        raise VmError("QEMU died")
        yield Running()


def test_a_failing_variant_reports_its_error_and_no_numbers(hello_payload: tuple) -> None:
    app, payload_app = hello_payload
    result = measure(FailingVariant(app, payload_app, Settings(runs=2)))
    assert result.error == "QEMU died" and result.skipped is None
    assert result.boot_s == [] and result.requests_per_s is None


def test_no_crun_skips_the_container(hello_payload: tuple,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common.shutil, "which", lambda name: None)
    app, payload_app = hello_payload
    result = measure(ContainerVariant(app, payload_app, Settings()))
    assert result.skipped is not None and "`crun` is not installed" in result.skipped


def test_no_debootstrap_and_no_cache_skips(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: None)
    with pytest.raises(VariantSkipped) as e:
        rootfs.build_debian_root("vm")
    assert "no cached Debian root for the vm and no `debootstrap`" in e.value.message


def test_a_cached_root_needs_no_debootstrap(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: None)
    folder = rootfs.root_dir("vm")
    (folder / "root").mkdir(parents=True)
    (folder / "done").write_text("http://deb.debian.org/debian\n")
    assert rootfs.build_debian_root("vm") == folder / "root"


def test_find_mirror_reads_both_formats(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "other.sources").write_text("Types: deb\nURIs: https://example.org/node\n")
    (d / "debian.sources").write_text("Types: deb\nURIs: http://mirror.example/debian\n"
                                      "Suites: bookworm\n")
    assert rootfs.find_mirror((tmp_path / "none", d)) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n")
    assert rootfs.find_mirror((one,)) == "http://ftp.example/debian"
    assert rootfs.find_mirror((tmp_path / "none",)) is None


def test_slim_keeps_copyright_files(tmp_path: Path) -> None:
    doc = tmp_path / "usr/share/doc/bash"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("GPL")
    (doc / "README.gz").write_text("x")
    lists = tmp_path / "var/lib/apt/lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_dists_bookworm_InRelease").write_text("x")
    rootfs.slim(tmp_path)
    assert (doc / "copyright").exists() and not (doc / "README.gz").exists()
    assert not list(lists.iterdir())


def test_payload_holds_app_server_wrapper_launcher(hello_payload: tuple) -> None:
    app, payload_app = hello_payload
    folder = payload_app.root
    assert payload_app.entry == f"{WRAPPER}:app" and payload_app.kind == "asgi"
    for name in ("hello.py", SERVER, SERVERS, f"{WRAPPER}.py", LAUNCHER, "krait_compare.json"):
        assert (folder / name).is_file(), name
    assert (folder / SERVER).read_bytes() == (ROOT / "src/krait/guest/http.py").read_bytes()
    settings = json.loads((folder / "krait_compare.json").read_text())
    assert settings == {"env": app.env, "kind": "asgi", "server": "builtin", "port": 8080}
    compile((folder / f"{WRAPPER}.py").read_text(), "wrapper", "exec")


def test_payload_needs_an_http_app(tmp_path: Path) -> None:
    app = dataclasses.replace(load_app(HELLO), kind="main")
    with pytest.raises(ConfigError):
        build_payload(app, tmp_path / "p")


def test_oci_config_is_read_only_with_a_limit_and_a_network_choice() -> None:
    base: dict[str, Any] = {"process": {"env": ["PATH=/usr/bin"], "terminal": True},
                            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"},
                                                     {"type": "mount"}]}}
    config = oci_config(Path("/r"), ["/usr/bin/python3", "x"], {"PORT": "9"}, 256, base,
                        host_network=True, cwd="/opt/app")
    assert config["root"] == {"path": "/r", "readonly": True}
    assert [n["type"] for n in config["linux"]["namespaces"]] == ["pid", "mount"]
    own = oci_config(Path("/r"), [], {}, 256, base)["linux"]["namespaces"]
    assert [n["type"] for n in own] == ["pid", "mount", "network"]
    assert config["linux"]["resources"]["memory"]["limit"] == 256 << 20
    assert config["process"]["env"] == ["PATH=/usr/bin", "PORT=9"]
    assert config["process"]["terminal"] is False
    assert config["process"]["cwd"] == "/opt/app"
    assert base["linux"]["namespaces"][1] == {"type": "network"}  # the base is not changed


def test_crun_argv_on_hybrid_cgroups() -> None:
    assert crun_argv("/usr/bin/crun", "state", "x", hybrid=False) == ["/usr/bin/crun",
                                                                       "state", "x"]
    argv = crun_argv("/usr/bin/crun", "state", "x", hybrid=True)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == ["/usr/bin/crun", "state", "x"]


def test_gpvm_command_matches_kraits_vm_settings(tmp_path: Path) -> None:
    argv = gpvm_command(Path("/k"), Path("/i"), Path("/d.img"),
                        Settings(memory_mib=256, accel="tcg"), 18080, 8080,
                        tmp_path / "c.log").argv()
    joined = " ".join(argv)
    assert argv[argv.index("-M") + 1] == "microvm,acpi=on"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=64"
    assert argv[argv.index("-m") + 1] == "256M"
    assert "hostfwd=tcp:127.0.0.1:18080-:8080" in joined
    assert "file=/d.img,format=raw,if=none,id=disk0,snapshot=on" in argv
    assert "tsc_early_khz=" in argv[argv.index("-append") + 1]
    kvm = gpvm_command(Path("/k"), Path("/i"), Path("/d.img"), Settings(accel="kvm"), 1, 2,
                       tmp_path / "c.log").argv()
    assert "tsc_early_khz=" not in kvm[kvm.index("-append") + 1]


def test_variants_are_the_four() -> None:
    assert list(VARIANTS) == ["process", "container", "gp-vm", "unikernel"]


def test_cli_rejects_an_unknown_variant_before_doing_anything(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from krait.cli import cli

    result = CliRunner().invoke(cli, ["bench", "compare", str(HELLO), "--only", "vmware",
                                      "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "vmware" in result.exception.message
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_tree_pss_counts_shared_pages_once() -> None:
    import os
    import signal
    import subprocess
    import sys

    # A parent and two forked children share most of their pages: their PSS adds up to
    # less than their RSS does.
    code = ("import os, time\nfor _ in range(2):\n    if os.fork() == 0:\n"
            "        time.sleep(30); os._exit(0)\nprint('up', flush=True); time.sleep(30)")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          start_new_session=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
            pss, rss = _common.tree_mb(proc.pid, "pss"), _common.tree_mb(proc.pid)
            assert 1 < pss < rss
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the children too
