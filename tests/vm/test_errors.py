"""Bad input: a clear message, a non-zero exit, nothing left running."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.kernel import Kernel

from .conftest import krait_cli

pytestmark = pytest.mark.vm


def test_no_config(tmp_path: Path) -> None:
    proc = krait_cli("build", tmp_path)
    assert proc.returncode == 1
    assert "no krait configuration" in proc.stderr
    assert "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "krait.toml").write_text('entry = "app:main"\nmemroy = "32M"\n')
    proc = krait_cli("build", tmp_path)
    assert proc.returncode == 1
    assert "unknown setting `memroy`" in proc.stderr
    assert "did you mean `memory`" in proc.stderr


def test_entry_not_importable_names_the_module(make_app: Callable[..., Path],
                                               kernel: Kernel) -> None:
    folder = make_app("import not_a_real_module_xyz\n\ndef main():\n    pass\n")
    proc = krait_cli("build", folder)
    assert proc.returncode == 1
    assert "not_a_real_module_xyz" in proc.stderr
    assert "modules" in proc.stderr  # says how to include a dynamic import
    assert "Traceback (most recent call last)" not in proc.stderr.split("error:")[0]


def test_app_crash_at_import_in_the_guest(make_app: Callable[..., Path],
                                          build: Callable[[Path], Path],
                                          no_leftover_qemu: None) -> None:
    # Importable at build time, fails at boot: only in the guest is BOOM set.
    folder = make_app("""
        import os
        if os.environ.get("BOOM"):
            raise SystemExit("refusing to start: BOOM is set")

        def main():
            return 0
    """)
    image = build(folder)
    proc = krait_cli("run", image, "--env", "BOOM=1")
    assert proc.returncode != 0
    assert "refusing to start: BOOM is set" in proc.stdout + proc.stderr


def test_kernel_panic_is_reported(hello_image: Path, no_leftover_qemu: None) -> None:
    proc = krait_cli("run", hello_image, "--cmdline", "init=/does-not-exist")
    assert proc.returncode == 1
    assert "kernel panicked" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_host_port_already_taken(hello_image: Path, no_leftover_qemu: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = krait_cli("run", hello_image, "-p", f"{port}:8080")
    assert proc.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in proc.stderr


def rewrite(image: Path, out: Path, member_name: str,
            change: Callable[[bytes], bytes | None]) -> Path:
    """A copy of ``image`` with one member changed (``change(data)``; None drops it)."""
    with tarfile.open(image) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == member_name:
                data = change(data)
                if data is None:
                    continue
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


@pytest.mark.parametrize("part", ["layers/app.erofs.zst", "layers/base.erofs.zst",
                                  "kernel.zst"])
def test_a_changed_part_is_refused_by_name(hello_image: Path, tmp_path: Path, part: str,
                                           no_leftover_qemu: None) -> None:
    copy = rewrite(hello_image, tmp_path / "copy.krait", part,
                   lambda data: data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    proc = krait_cli("run", copy)
    assert proc.returncode == 1
    assert f"{part} does not match its digest" in proc.stderr
    assert "corrupted or tampered with" in proc.stderr


def test_a_missing_disk_layer_is_refused_by_name(hello_image: Path, tmp_path: Path) -> None:
    copy = rewrite(hello_image, tmp_path / "copy.krait", "layers/base.erofs.zst",
                   lambda data: None)
    proc = krait_cli("run", copy)
    assert proc.returncode == 1
    assert "layers/base.erofs.zst is missing" in proc.stderr


def test_a_changed_disk_in_the_cache_is_unpacked_again(hello_image: Path) -> None:
    from krait.image.archive import open_image, unpack_for_boot

    image = open_image(hello_image)
    [(part, disk)] = [(p, d) for p, d in unpack_for_boot(image).disks if p.name == "app"]
    os.chmod(disk, 0o644)
    disk.write_bytes(disk.read_bytes()[:-1] + b"X")  # same size, other content
    [(_, again)] = [(p, d) for p, d in unpack_for_boot(image).disks if p.name == "app"]
    assert again == disk
    assert hashlib.sha256(again.read_bytes()).hexdigest() == part.unpacked_sha256


def test_truncated_image_is_refused(hello_image: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.krait"
    broken.write_bytes(hello_image.read_bytes()[:5000])
    proc = krait_cli("run", broken)
    assert proc.returncode == 1
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_image(tmp_path: Path) -> None:
    proc = krait_cli("run", tmp_path / "nope.krait")
    assert proc.returncode == 1
    assert "no such image" in proc.stderr


def test_only_what_the_key_signed_boots(make_app: Callable[..., Path], tmp_path: Path,
                                        no_leftover_qemu: None) -> None:
    key = tmp_path / "release.key"
    assert krait_cli("keygen", key).returncode == 0
    app = make_app("def main():\n    print('SIGNED-RAN')\n")
    built = krait_cli("build", app, "--sign", key, "-q")
    assert built.returncode == 0, built.stderr
    image = Path(built.stdout.strip())
    proc = krait_cli("run", image, "--verify", f"{key}.pub")
    assert proc.returncode == 0 and "SIGNED-RAN" in proc.stdout, proc.stderr
    digest = json.loads(krait_cli("inspect", image, "--json").stdout)["digest"]
    assert krait_cli("run", image, "--digest", f"sha256:{digest}").returncode == 0

    def boot_a_shell_instead(raw: bytes) -> bytes:
        manifest = json.loads(raw)
        manifest["boot"]["cmdline"] = "init=/krait/app/evil"
        return json.dumps(manifest).encode()

    # Every part still matches the manifest: only the signature can tell.
    evil = rewrite(image, tmp_path / "evil.krait", "manifest.json", boot_a_shell_instead)
    for flags in (("--verify", f"{key}.pub"), ("--digest", f"sha256:{digest}")):
        proc = krait_cli("run", evil, *flags)
        assert proc.returncode == 1, proc.stdout
        assert "evil.krait" in proc.stderr and "Traceback" not in proc.stderr
    assert "changed since it was signed" in krait_cli("run", evil, "--verify",
                                                      f"{key}.pub").stderr
    unsigned = krait_cli("run", "--verify", f"{key}.pub", tmp_path / "missing.krait")
    assert unsigned.returncode == 1 and "no such image" in unsigned.stderr
