"""A .krait file is hostile until checked: crafted ones are refused with krait's own error
(exit 1, never an internal error), in bounded memory, writing nothing outside krait's
folders. Peak RSS is the krait process's own (wait4), each under 256 MB."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from krait.errors import ImageError
from krait.image.archive import MAX_MEMBERS, open_image, write_members

from ._hostile import krait, refused, tree, within_memory
from ._manifests import crafted

BIG = 400 << 20  # bigger than the memory krait may use


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    """A USTAR header as tar writes one, of any kind (``kind``), checksum right."""
    info = tarfile.TarInfo(name)
    info.size, info.linkname = size, link
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[156:157] = kind
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def raw_tar(path: Path, *blocks: bytes) -> Path:
    path.write_bytes(b"".join(blocks) + bytes(1024))
    return path


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def first_member(path: Path) -> bytes:
    """The manifest.json member of a good image: header and data."""
    with tarfile.open(path) as tar:
        data = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
    return header("manifest.json", len(data)) + padded(data)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return crafted(tmp_path / "good.krait")


def test_a_crafted_image_that_is_right_opens(good: Path) -> None:
    image = open_image(good)
    assert [f.path for f in image.files()] == ["/f.py", "/krait/app/f.py"]
    ran = krait("inspect", good, "--files")
    assert ran.returncode == 0, ran.stderr
    within_memory(ran, "a crafted image that is right")


@pytest.mark.parametrize(("kind", "link", "words"), [
    (tarfile.SYMTYPE, "/etc/passwd", "holds a link ('kernel.zst' -> '/etc/passwd')"),
    (tarfile.LNKTYPE, "manifest.json", "holds a link"),
    (tarfile.GNUTYPE_SPARSE, "", "a kind krait never writes"),
    (tarfile.XHDTYPE, "", "a kind krait never writes"),  # PAX: a size or name of any length
    (tarfile.GNUTYPE_LONGNAME, "", "a kind krait never writes"),
    (tarfile.DIRTYPE, "", "a kind krait never writes"),
    (tarfile.CHRTYPE, "", "a kind krait never writes"),
])
def test_members_that_are_not_plain_files_are_refused(
        good: Path, tmp_path: Path, kind: bytes, link: str, words: str) -> None:
    # The sparse one claims 3 GB: tar would expand it in memory; krait reads no further.
    evil = raw_tar(tmp_path / "evil.krait", first_member(good),
                   header("kernel.zst", 3 << 30 if kind == tarfile.GNUTYPE_SPARSE else 0,
                          kind, link))
    ran = krait("inspect", evil)
    refused(ran, words)
    within_memory(ran, f"a {kind!r} member")


def members_edit(fn: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]
                 ) -> Callable[[Path], Path]:
    return lambda path: crafted(path, members=fn)


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "words"), [
    (members_edit(lambda m: [*m, *((f"x{i}", b"") for i in range(MAX_MEMBERS))]),
     "more than 32 members"),
    (members_edit(lambda m: [*m, m[1]]), "holds 'kernel.zst' twice"),
    (members_edit(lambda m: [*m, ("extra.sh", b"#!/bin/sh")]), "which its manifest does not"),
    (members_edit(lambda m: m[1:] + m[:1]), "first member is not manifest.json"),
    (members_edit(lambda m: [m[0], ("kernel.zst", m[1][1] + b"x"), *m[2:]]),
     "kernel.zst is"),
    (members_edit(lambda m: [m[0], *m[2:]]), "kernel.zst is missing"),
    (members_edit(lambda m: [*m, ("manifest.sig", bytes(2000))]), "manifest.sig is over"),
    (members_edit(lambda m: [*m, ("../../etc/x", b"")]), "a member named '../../etc/x'"),
    (lambda p: crafted(p, change=lambda d: d.update(settings={})), "not one krait writes"),
    (lambda p: crafted(p, change=lambda d: d.update(settings=[])), "not one krait writes"),
    (lambda p: crafted(p, change=lambda d: d.update(interpreter=None)), "not one krait writes"),
    (lambda p: crafted(p, change=lambda d: d["layers"][1].update(name="../..")),
     "not one krait writes"),
    # Finding 8: a 300-character module name was "File name too long" at exit 70.
    (lambda p: crafted(p, change=lambda d: d["settings"].update(entry="a" * 300 + ":app")),
     "expected at most 200 characters"),
    (lambda p: written(p, b"x" * 4096), "not a krait image"),
    (lambda p: written(p, b""), "cut short"),
    (lambda p: written(p, crafted(p).read_bytes()[:3000]), "cut short"),
])
def test_crafted_images_are_refused_by_name(tmp_path: Path, make: Callable[[Path], Path],
                                            words: str) -> None:
    image = make(tmp_path / "evil.krait")
    with pytest.raises(ImageError, match=r"evil\.krait"):
        open_image(image)
    ran = krait("inspect", image)
    refused(ran, words)
    within_memory(ran, words)


def test_what_is_not_a_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.krait"
    os.mkfifo(fifo)  # opening it to read would wait for a writer for ever
    for path, words in ((fifo, "not a file"), (Path("/dev/zero"), "not a file"),
                        (tmp_path, "not a file"), (tmp_path / "nothing.krait", "no such image")):
        refused(krait("inspect", path, timeout=30), words)


def test_a_member_of_gigabytes_is_hashed_in_pieces(tmp_path: Path) -> None:
    # A 1 GiB member, as the manifest declares, its data a hole in a sparse file: krait
    # reads all of it (to check it) but never holds it.
    size = 1 << 30
    evil = crafted(tmp_path / "evil.krait", change=lambda d: d["layers"][0].update(size=size))
    with tarfile.open(evil) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    with open(evil, "wb") as out:
        for name, data in members:
            if name == "layers/base.erofs.zst":
                out.write(header(name, size))
                out.seek(size, os.SEEK_CUR)
            else:
                out.write(header(name, len(data)) + padded(data))
        out.write(bytes(1024))
    ran = krait("inspect", evil, timeout=300)
    refused(ran, "layers/base.erofs.zst does not match its digest")
    within_memory(ran, "a 1 GiB member, hashed")


def test_the_longest_listing_is_printed_in_bounded_memory(tmp_path: Path) -> None:
    # Just under the 8 MiB a listing may be: 160,000 files (rich laid out a table of them
    # in 500 MB and a minute).
    rows = [[f"/krait/app/f{i:07d}.py", 0o100644, i, "", ""] for i in range(160_000)]
    image = crafted(tmp_path / "many.krait", listings={"app": rows})
    for args in ((), ("--files",)):
        ran = krait("inspect", image, *args)
        assert ran.returncode == 0, ran.stderr
        within_memory(ran, f"an image of 160,000 files {' '.join(args)}")
    assert ran.stdout.count("/krait/app/f") == 160_000


def export(image: Path, tmp_path: Path) -> Any:
    return krait("export", image, "--oci", tmp_path / "layout", timeout=300)


def test_a_layer_that_inflates_past_what_it_declares_is_refused(tmp_path: Path) -> None:
    # A few kilobytes stored, 400 MB unpacked, 1 MiB declared (issue #20: 4.25 GB of RSS).
    evil = crafted(tmp_path / "bomb.krait", layers={"base": bytes(BIG)},
                   change=lambda d: d["layers"][0].update(unpacked_size=1 << 20))
    assert evil.stat().st_size < 100_000
    ran = export(evil, tmp_path)
    refused(ran, "layers/base.erofs.zst unpacks to more than the 1048576 bytes")
    within_memory(ran, "a layer that inflates to 400 MB, 1 MiB declared")
    assert not (tmp_path / "layout").exists()
    disks = Path(os.environ["KRAIT_CACHE"]) / "disks"
    assert not [p for p in disks.iterdir() if p.name.startswith(".")]  # no half-written disk


def test_a_big_layer_that_is_what_it_says_exports_in_bounded_memory(tmp_path: Path) -> None:
    image = crafted(tmp_path / "big.krait", layers={"base": bytes(BIG), "app": b"app"})
    ran = export(image, tmp_path)
    assert ran.returncode == 0, ran.stderr
    within_memory(ran, "a 400 MB layer, exported")
    digest = ran.stdout.strip().removeprefix("sha256:")
    manifest = json.loads((tmp_path / "layout" / "blobs" / "sha256" / digest).read_bytes())
    layer = manifest["layers"][0]
    assert layer["size"] > BIG
    blob = tmp_path / "layout" / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    with tarfile.open(blob) as tar:
        assert tar.getmember("disks/0-base.erofs").size == BIG


@pytest.mark.parametrize(("field", "value"), [
    ("format", "erofs/../../../../X/pwned"), ("name", "../.."), ("member", "../../X/pwned")])
def test_no_field_of_an_image_reaches_a_host_path(tmp_path: Path, field: str,
                                                  value: str) -> None:
    (tmp_path / "X").mkdir()
    before = tree(tmp_path / "X")
    evil = crafted(tmp_path / "evil.krait", change=lambda d: d["layers"][1].update(
        {field: value}))
    ran = export(evil, tmp_path)
    refused(ran, "not one krait writes")
    assert tree(tmp_path / "X") == before
    assert not (tmp_path / "layout").exists()
    refused(krait("run", evil, "--dry-run"), "not one krait writes")


def test_write_members_and_open_image_agree(tmp_path: Path) -> None:
    # What krait writes, its own reader accepts (and a tar reader reads the same).
    path = crafted(tmp_path / "x.krait")
    image = open_image(path)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            assert image.read(member.name) == tar.extractfile(member).read()  # type: ignore[union-attr]
    out = tmp_path / "again.krait"
    write_members(out, [(name, image.read(name)) for name in image.members])
    assert out.read_bytes() == path.read_bytes()


def test_what_an_image_says_is_printed_as_text(tmp_path: Path) -> None:
    # Finding 7: rich read "[/]" as a closing tag (a crash), dropped "[id]", and let ESC
    # sequences through to the terminal.
    paths = ["/krait/app/static/[/].css", "/krait/app/templates/[id].html",
             "/krait/app/\x1b]0;pwned\x07x.py", "/krait/app/\u202eexe.py"]
    image = crafted(tmp_path / "x.krait", listings={
        "app": [[p, 0o100644, 10, "", ""] for p in paths]})
    ran = krait("inspect", image, "--files")
    assert ran.returncode == 0, ran.stderr
    for shown in ("static/[/].css", "templates/[id].html", "\\x1b]0;pwned\\x07x.py",
                  "\\u202eexe.py"):
        assert shown in ran.stdout, ran.stdout
    assert "\x1b" not in ran.stdout and "\x07" not in ran.stdout and "\u202e" not in ran.stdout


def test_an_error_quoting_an_image_drives_no_terminal(tmp_path: Path) -> None:
    image = crafted(tmp_path / "x.krait", change=lambda d: d.update(name="x\x1b[2J\x1b]0;t\x07"))
    ran = krait("inspect", image)
    refused(ran, "not a valid image name", "\\x1b[2J")
    assert "\x1b" not in ran.stderr and "\x07" not in ran.stderr
