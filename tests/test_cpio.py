"""krait.image.cpio: the deterministic newc writer and its reader."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from krait.image.cpio import MAGIC, MTIME, TRAILER, Entry, read_cpio, with_parents, write_cpio


def sample_entries() -> list[Entry]:
    return [
        Entry.file("/krait/app/main.pyc", b"\x00\x01compiled bytes"),
        Entry.file("/usr/bin/python3", b"\x7fELF" + bytes(range(256)), executable=True),
        Entry.symlink("/lib", "usr/lib"),
        Entry.chardev("/dev/console", 5, 1),
        Entry.folder("/tmp", 0o1777),
        Entry.file("/etc/empty", b""),
        Entry.file("/etc/odd", b"abc"),  # a size that needs padding
    ]


def headers(data: bytes) -> list[tuple[int, dict[str, int], str]]:
    """Walk the archive independently of read_cpio: (offset, fields, name) per header."""
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor",
             "devminor", "rdevmajor", "rdevminor", "namesize", "check")
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == MAGIC, f"no header at offset {pos}"
        fields = {n: int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16)
                  for i, n in enumerate(names)}
        name_start = pos + 110
        name = data[name_start:name_start + fields["namesize"]]
        assert name.endswith(b"\0")
        out.append((pos, fields, name[:-1].decode()))
        data_start = name_start + fields["namesize"]
        data_start += -data_start % 4
        pos = data_start + fields["filesize"]
        pos += -pos % 4
        if name[:-1].decode() == TRAILER:
            assert pos == len(data)
            return out


def test_deterministic_regardless_of_order() -> None:
    entries = sample_entries()
    a = write_cpio(entries)
    b = write_cpio(list(reversed(entries)))
    c = write_cpio(entries[3:] + entries[:3])
    assert a == b == c


def test_different_content_gives_different_bytes() -> None:
    entries = sample_entries()
    changed = [*entries[:-1], Entry.file("/etc/odd", b"abd")]
    assert write_cpio(entries) != write_cpio(changed)


def test_parents_are_added() -> None:
    paths = [e.path for e in read_cpio(write_cpio([Entry.file("/a/b/c/file.txt", b"x")]))]
    assert paths == ["/a", "/a/b", "/a/b/c", "/a/b/c/file.txt"]


def test_with_parents_keeps_explicit_folder_mode() -> None:
    entries = with_parents([Entry.folder("/tmp", 0o1777), Entry.file("/tmp/x/y", b"")])
    by_path = {e.path: e for e in entries}
    assert by_path["/tmp"].mode == stat.S_IFDIR | 0o1777
    assert by_path["/tmp/x"].mode == stat.S_IFDIR | 0o755
    assert [e.path for e in entries] == sorted(by_path)


def test_round_trip() -> None:
    entries = sample_entries()
    back = {e.path: e for e in read_cpio(write_cpio(entries))}
    for e in entries:
        got = back[e.path]
        assert got.mode == e.mode, e.path
        assert got.rdev == e.rdev, e.path
        if stat.S_ISDIR(e.mode) or stat.S_ISCHR(e.mode):
            assert got.data == b""
        else:
            assert got.data == e.data, e.path
    # The parents the writer added: /etc, /krait, /krait/app, /usr, /usr/bin, /dev.
    assert set(back) == {e.path for e in entries} | {"/etc", "/krait", "/krait/app", "/usr",
                                                      "/usr/bin", "/dev"}


def test_symlink_entry() -> None:
    (link,) = read_cpio(write_cpio([Entry.symlink("/lib", "usr/lib")]))
    assert stat.S_ISLNK(link.mode)
    assert stat.S_IMODE(link.mode) == 0o777
    assert link.data == b"usr/lib"


def test_chardev_entry() -> None:
    data = write_cpio([Entry.chardev("/console", 5, 1)])
    (dev,) = read_cpio(data)
    assert stat.S_ISCHR(dev.mode)
    assert stat.S_IMODE(dev.mode) == 0o600
    assert dev.rdev == (5, 1)
    assert dev.data == b""
    (_, fields, name), _trailer = headers(data)
    assert name == "console"
    assert (fields["rdevmajor"], fields["rdevminor"]) == (5, 1)
    assert fields["filesize"] == 0


def test_every_header_is_aligned() -> None:
    data = write_cpio(sample_entries())
    found = headers(data)
    assert len(found) == len(read_cpio(data)) + 1  # plus the trailer
    for offset, _, name in found:
        assert offset % 4 == 0, name
    # And no stray magic anywhere else: every occurrence is one of the headers.
    starts, pos = [], data.find(MAGIC)
    while pos != -1:
        starts.append(pos)
        pos = data.find(MAGIC, pos + 1)
    assert starts == [offset for offset, _, _ in found]
    assert len(data) % 4 == 0


def test_header_fields() -> None:
    data = write_cpio(sample_entries())
    found = headers(data)
    body = found[:-1]
    assert [f["ino"] for _, f, _ in body] == list(range(1, len(body) + 1))
    assert [name for _, _, name in body] == sorted(name for _, _, name in body)
    for _, f, name in body:
        assert (f["uid"], f["gid"]) == (0, 0), name
        assert f["mtime"] == MTIME, name
        assert f["nlink"] == (2 if stat.S_ISDIR(f["mode"]) else 1), name
        assert not name.startswith("/")


def test_trailer_present() -> None:
    data = write_cpio([Entry.file("/x", b"1")])
    *_, (_, fields, name) = headers(data)
    assert name == TRAILER
    assert fields["filesize"] == 0
    assert b"TRAILER!!!\0" in data[-128:]
    assert all(e.path != "/" + TRAILER for e in read_cpio(data))


def test_empty_archive_is_just_the_trailer() -> None:
    data = write_cpio([])
    assert read_cpio(data) == []
    ((offset, _, name),) = headers(data)
    assert (offset, name) == (0, TRAILER)


def test_read_concatenated_archives() -> None:
    first = write_cpio([Entry.file("/a", b"A")])
    second = write_cpio([Entry.file("/b", b"BB")])
    paths = [e.path for e in read_cpio(first + second + b"\0" * 512)]
    assert paths == ["/a", "/b"]


def test_read_concatenated_archives_with_padding_between() -> None:
    first = write_cpio([Entry.file("/a", b"A")])
    second = write_cpio([Entry.file("/b", b"BB")])
    paths = [e.path for e in read_cpio(first + b"\0" * 512 + second)]
    assert paths == ["/a", "/b"]


def test_read_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a newc cpio archive"):
        read_cpio(b"this is not cpio at all")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="no cpio command")
def test_cpio_command_lists_same_names(tmp_path: Path) -> None:
    data = write_cpio(sample_entries())
    archive = tmp_path / "a.cpio"
    archive.write_bytes(data)
    proc = subprocess.run(["cpio", "-it", "--quiet"], stdin=archive.open("rb"),
                          capture_output=True, text=True, timeout=10, check=True)
    listed = proc.stdout.splitlines()
    expected = [e.path.lstrip("/") for e in read_cpio(data)]
    assert listed == expected
    assert "dev/console" in listed and "lib" in listed
