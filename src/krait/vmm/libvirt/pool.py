"""krait's storage pool on a libvirt host: the image's files, named by their digest,
copied there once over the libvirt connection."""

from __future__ import annotations

import contextlib
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from krait.errors import VmError
from krait.vmm.libvirt.connection import binding, call, error_message, lock_for

log = logging.getLogger("krait")

POOL = "krait"  # the storage pool krait's files live in, on each host ...
POOL_ENV = "KRAIT_LIBVIRT_POOL"  # ... in this folder of the host's, if it has to be made
POOL_PATH = "/var/lib/krait/images"
BOOT_PREFIX = "boot-"  # boot-DOMAIN-TOKEN.disk: one boot's settings, in the pool
DONE = ".done"  # NAME.done beside NAME: NAME was copied whole


class Pool:
    """krait's storage pool on a libvirt host: files named by their digest."""

    def __init__(self, uri: str, conn: Any) -> None:
        self.uri = uri
        self.conn = conn
        self.pool = self._ensure()

    def _ensure(self) -> Any:
        """The host's pool "krait"; made (transient: nothing written to the host's
        libvirt configuration) over its folder if libvirtd does not have it yet."""
        libvirt = binding()
        try:
            pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            path = os.environ.get(POOL_ENV, POOL_PATH)
            xml = ET.Element("pool", {"type": "dir"})
            ET.SubElement(xml, "name").text = POOL
            target = ET.SubElement(xml, "target")
            ET.SubElement(target, "path").text = path
            # 0711: QEMU (libvirt's unprivileged user) reaches the files, lists nothing.
            ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0711"
            try:
                pool = self.conn.storagePoolCreateXML(
                    ET.tostring(xml, encoding="unicode"),
                    libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
            except libvirt.libvirtError as e:
                with contextlib.suppress(libvirt.libvirtError):  # made by another krait
                    return self.conn.storagePoolLookupByName(POOL)
                raise VmError(f"libvirt at {self.uri} could not make the storage pool "
                              f"{POOL} in {path}: {error_message(e)}") from None
        if not pool.isActive():
            call(self.uri, f"start the storage pool {POOL}", pool.create, 0)
        return pool

    def _lookup(self, name: str) -> Any:
        libvirt = binding()
        try:
            return self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None

    def put_file(self, path: Path) -> str:
        """Copy a file named by its digest (``DIGEST.SUFFIX``) unless the host has it
        whole: a copy counts once its ``.done`` marker is there, written after the last
        byte (one that was cut off, or is under way in another process, has none)."""
        with lock_for(f"{self.uri} {path.name}"):  # one copy at a time from this process
            existing = self._lookup(path.name)
            if existing is not None and self._lookup(path.name + DONE) is not None:
                return str(call(self.uri, f"find {path.name}", existing.path))
            if existing is not None:
                self.delete(path.name)
            with path.open("rb") as source:
                copied = self._upload(path.name, path.stat().st_size, source.read, 0o444)
            self._upload(path.name + DONE, 0, lambda _n: b"", 0o444)
            return copied

    def put_bytes(self, name: str, data: bytes) -> str:
        view = memoryview(data)
        offset = 0

        def read(n: int) -> bytes:
            nonlocal offset
            chunk = bytes(view[offset:offset + n])
            offset += len(chunk)
            return chunk

        return self._upload(name, len(data), read, mode=0o600)

    def _upload(self, name: str, size: int, read: Callable[[int], bytes], mode: int) -> str:
        libvirt = binding()
        xml = ET.Element("volume")
        ET.SubElement(xml, "name").text = name
        ET.SubElement(xml, "capacity", {"unit": "bytes"}).text = str(size)
        target = ET.SubElement(xml, "target")
        ET.SubElement(target, "format", {"type": "raw"})
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = f"{mode:o}"
        volume = call(self.uri, f"make {name} in pool {POOL}", self.pool.createXML,
                       ET.tostring(xml, encoding="unicode"), 0)
        try:
            if size:
                stream = self.conn.newStream(0)
                volume.upload(stream, 0, size, 0)
                stream.sendAll(lambda _stream, n, _opaque: read(n), None)
                stream.finish()
            where = str(volume.path())
        except BaseException as e:
            with contextlib.suppress(libvirt.libvirtError):
                volume.delete(0)
            if isinstance(e, libvirt.libvirtError):
                raise VmError(f"could not copy {name} to libvirt at {self.uri}: "
                              f"{error_message(e)}") from None
            raise
        if size:
            log.info("copied %s (%d bytes) to %s", name, size, self.uri)
        return where

    def delete(self, name: str) -> None:
        volume = self._lookup(name)
        if volume is not None:
            with contextlib.suppress(binding().libvirtError):
                volume.delete(0)

    def delete_prefix(self, prefix: str) -> None:
        libvirt = binding()
        with contextlib.suppress(libvirt.libvirtError):
            for name in self.pool.listVolumes():
                if name.startswith(prefix):
                    self.delete(name)
