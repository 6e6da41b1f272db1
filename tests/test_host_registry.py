"""`krait pull` from a hostile registry: a real HTTP server on loopback, run by the test,
that sends endless, oversized, stalling or lying answers. Each pull ends within its
timeout with krait's own error (exit 1), in bounded memory, keeping nothing."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from krait.image.registry import CONFIG_TYPE, OCI_MANIFEST, PART_TYPE, TITLE

from ._hostile import krait, refused, within_memory
from ._manifests import crafted

TIMEOUT = 2  # KRAIT_REGISTRY_TIMEOUT for these pulls
ENV = {"KRAIT_REGISTRY_TIMEOUT": str(TIMEOUT)}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry(ThreadingHTTPServer):
    """Serves one crafted image under every repository; the repository's name says how
    to misbehave (see Handler)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, image: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        import tarfile

        with tarfile.open(image) as tar:
            self.members = [(m.name, tar.extractfile(m).read())  # type: ignore[union-attr]
                            for m in tar]
        self.blobs = {sha(data): data for _, data in self.members}
        self.requests = 0
        self.done = threading.Event()

    def manifest(self, mode: str) -> bytes:
        descriptors: list[dict[str, Any]] = [
            {"mediaType": CONFIG_TYPE if i == 0 else PART_TYPE, "digest": sha(data),
             "size": len(data), "annotations": {TITLE: name}}
            for i, (name, data) in enumerate(self.members)]
        if mode == "lying-size":
            descriptors[1]["size"] = 3 << 30
        if mode == "extra-part":
            descriptors.append({**descriptors[1], "annotations": {TITLE: "evil.sh"}})
        if mode == "many-parts":
            descriptors += [{**descriptors[1], "annotations": {TITLE: f"x{i}"}}
                            for i in range(40)]
        if mode == "changed-blob":
            self.blobs[descriptors[1]["digest"]] = b"other bytes"
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descriptors[0], "layers": descriptors[1:]}).encode()


class Handler(BaseHTTPRequestHandler):
    server: Registry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests += 1
        _, _, repo, kind, ref = self.path.split("/", 4)
        mode, target = repo, kind == "manifests" or ref == sha(self.server.members[1][1])
        if mode == "silent":  # not even a status line
            self.server.done.wait(60)
            return
        if target and mode == "endless-" + ("manifest" if kind == "manifests" else "blob"):
            return self.endless()
        body = (self.server.manifest(mode) if kind == "manifests"
                else self.server.blobs.get(ref, b""))
        if target and mode == "stall" + ("-manifest" if kind == "manifests" else "-blob"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:10])  # then nothing, the connection open
            self.wfile.flush()
            self.server.done.wait(60)
            return
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        self.send_header("Content-Length", str(10**12 if mode == "huge-length" else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def endless(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")  # a body until the connection closes
        self.end_headers()
        chunk = b"[" * (1 << 20)
        try:
            while not self.server.done.is_set():
                self.wfile.write(chunk)
        except OSError:
            pass  # krait hung up


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[Registry, str]]:
    server = Registry(crafted(tmp_path / "served.krait"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.done.set()
    server.shutdown()
    server.server_close()


def pulled_nothing(tmp_path: Path) -> None:
    pulled = Path(os.environ["KRAIT_CACHE"]) / "pulled"
    assert not list(pulled.glob(".pull-*"))
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".pull-*"))


@pytest.mark.parametrize(("mode", "words"), [
    ("endless-manifest", "its manifest is more than the 4194304 bytes"),
    ("huge-length", "its manifest is 1000000000000 bytes, more than the 4194304"),
    ("endless-blob", "kernel.zst is more than the"),
    ("lying-size", "kernel.zst is 3221225472 bytes; its manifest says"),
    ("extra-part", "evil.sh is not a part of it"),
    ("many-parts", "names 46 parts"),
    ("changed-blob", "kernel.zst does not match its digest after the pull"),
])
def test_a_registry_that_sends_too_much_or_lies_is_refused(
        registry: tuple[Registry, str], tmp_path: Path, mode: str, words: str) -> None:
    _, where = registry
    started = time.monotonic()
    ran = krait("pull", f"{where}/{mode}:1", "-o", tmp_path / "out.krait", env=ENV,
                timeout=120)
    refused(ran, words)
    within_memory(ran, mode)
    assert time.monotonic() - started < 60
    pulled_nothing(tmp_path)


@pytest.mark.parametrize("mode", ["silent", "stall-manifest", "stall-blob"])
def test_a_registry_that_stalls_fails_within_the_timeout(
        registry: tuple[Registry, str], tmp_path: Path, mode: str) -> None:
    _, where = registry
    started = time.monotonic()
    ran = krait("pull", f"{where}/{mode}:1", "-o", tmp_path / "out.krait", env=ENV,
                timeout=120)
    took = time.monotonic() - started
    refused(ran, f"sent nothing for {TIMEOUT} s", "KRAIT_REGISTRY_TIMEOUT")
    assert took < TIMEOUT * 2 + 10, took  # krait's start-up, then one timeout (two at most)
    pulled_nothing(tmp_path)


def test_an_honest_registry_still_pulls(registry: tuple[Registry, str], tmp_path: Path) -> None:
    _, where = registry
    out = tmp_path / "out.krait"
    ran = krait("pull", f"{where}/fine:1", "-o", out, env=ENV)
    assert ran.returncode == 0, ran.stderr
    within_memory(ran, "an honest registry")
    assert out.read_bytes() == (tmp_path / "served.krait").read_bytes()


def test_pull_into_a_folder_is_refused_before_anything_is_fetched(
        registry: tuple[Registry, str], tmp_path: Path) -> None:
    server, where = registry
    (tmp_path / "folder").mkdir()
    refused(krait("pull", f"{where}/fine:1", "-o", tmp_path / "folder", env=ENV),
            "is a folder")
    refused(krait("pull", f"{where}/fine:1", "-o", tmp_path / "missing" / "x.krait", env=ENV),
            "is not a folder")
    assert server.requests == 0
