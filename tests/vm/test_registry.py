"""Images through a real OCI registry (Debian's docker-registry, started by each test), and
the OCI image layout of `krait export`, read by a real OCI tool (skopeo)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.vmm.ports import free_port
from tests.vm._hosts import registry_running
from tests.vm.conftest import ctrl_c, krait_cli, krait_running


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with registry_running(tmp_path / "registry") as where:
        yield where


def test_push_then_pull_gives_the_same_bytes_and_run_boots_a_reference(
        registry: str, hello_image: Path, tmp_path: Path) -> None:
    ref = f"{registry}/apps/hello:1"
    pushed = krait_cli("push", hello_image, ref)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().startswith(f"{ref}@sha256:")
    again = krait_cli("push", hello_image, ref)  # every blob is there: only the manifest
    assert again.stdout == pushed.stdout
    out = tmp_path / "pulled.krait"
    pulled = krait_cli("pull", ref, "-o", out)
    assert pulled.returncode == 0, pulled.stderr
    assert out.read_bytes() == hello_image.read_bytes()
    pinned = krait_cli("pull", pushed.stdout.strip(), "-o", tmp_path / "pinned.krait")
    assert pinned.returncode == 0, pinned.stderr  # by the digest push printed
    port = free_port()
    with krait_running("run", ref, "-p", f"{port}:8080") as proc:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    assert b"Hello" in r.read()
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        _, err = ctrl_c(proc)
    assert proc.returncode == 0, err


def test_a_blob_changed_in_the_registry_is_refused_and_nothing_is_kept(
        registry: str, hello_image: Path, tmp_path: Path) -> None:
    ref = f"{registry}/hello:1"
    assert krait_cli("push", hello_image, ref).returncode == 0
    with tarfile.open(hello_image) as tar:
        blob = tar.extractfile("kernel.zst").read()  # type: ignore[union-attr]
    stored = next((tmp_path / "registry" / "data").rglob(
        f"blobs/sha256/*/{hashlib.sha256(blob).hexdigest()}/data"))
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = tmp_path / "pulled.krait"
    result = krait_cli("pull", ref, "-o", out)
    assert result.returncode == 1
    assert "kernel.zst does not match its digest after the pull" in result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob("*.krait")) and not list(tmp_path.glob(".pull-*"))


def test_a_registry_that_is_down_or_refuses_is_a_clear_error(
        hello_image: Path, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}/hello:1"
    started = time.monotonic()
    down = krait_cli("pull", nowhere)
    assert down.returncode == 1
    assert "cannot reach the registry at 127.0.0.1" in down.stderr
    assert time.monotonic() - started < 20  # no retries for minutes
    with registry_running(tmp_path / "ro", readonly=True) as where:
        refused = krait_cli("push", hello_image, f"{where}/hello:1")
    assert refused.returncode == 1
    assert f"the registry refused {where}/hello:1" in refused.stderr
    assert "Traceback" not in down.stderr + refused.stderr


def test_export_writes_a_layout_an_oci_tool_reads_holding_the_image_as_files(
        registry: str, hello_image: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    result = krait_cli("export", hello_image, "--oci", layout, "--tag", "v1")
    assert result.returncode == 0, result.stderr
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["Labels"]["dev.krait.image.name"] == "hello"
    (layer_digest,) = inspected["Layers"]
    layer = layout / "blobs" / "sha256" / layer_digest.removeprefix("sha256:")
    manifest = json.loads(krait_cli("inspect", "--json", hello_image).stdout)
    with tarfile.open(layer) as tar:
        files = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile()}
        cmdline = tar.extractfile("krait/cmdline").read().decode()  # type: ignore[union-attr]
    assert files["boot/vmlinux"] == manifest["kernel"]["unpacked_sha256"]
    disks = sorted(name for name in files if name.startswith("disks/"))
    assert [files[d] for d in disks] == [
        next(part["unpacked_sha256"] for part in manifest["layers"] if part["name"] ==
             d.split("-", 1)[1].removesuffix(".erofs")) for d in disks]
    assert "root=/dev/vda" in cmdline
    # A registry takes it as any image; `krait pull` knows it is not a .krait.
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:v1",
                    f"docker://{registry}/layout:v1", "--dest-tls-verify=false"], check=True)
    pulled = krait_cli("pull", f"{registry}/layout:v1", "-o", tmp_path / "x.krait")
    assert pulled.returncode == 1
    assert "is not a krait image" in pulled.stderr
    again = krait_cli("export", hello_image, "--oci", layout)
    assert again.returncode == 1 and "is not empty" in again.stderr


def test_export_libvirt_xml_is_the_domain_libvirt_accepts(
        libvirt_uri: str, hello_image: Path) -> None:
    import libvirt

    xml = krait_cli("export", hello_image, "--libvirt-xml", "-p", "8080:8080").stdout
    assert "hostfwd=tcp:127.0.0.1:8080-:8080" in xml
    conn = libvirt.open(libvirt_uri)
    try:  # libvirt parses and validates it (not started: its files are not in the pool)
        domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        assert domain.name().startswith("krait-hello")
        domain.undefine()
    finally:
        conn.close()
