"""An app that calls other services by name (connect = ["https://api.example.test"]):
the name resolves inside the guest, TLS verifies against the image's trust store,
and nothing undeclared resolves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from krait.config import load_app
from krait.image.archive import open_image
from krait.image.build import build_image
from krait.kernel import Kernel

from .._tls import https_server, throwaway_ca
from ._examples import TEST_APPS, bare_copy, request
from .conftest import Boot

pytestmark = pytest.mark.vm
API = "api.example.test"


@pytest.fixture(scope="module")
def ca_and_image(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, Path, Path]:
    """The app as its author wrote it, with a throw-away CA as its `ca`; built once."""
    folder = bare_copy(TEST_APPS / "calls_by_name", tmp_path_factory.mktemp("app"))
    _, cert, key = throwaway_ca(folder, API)
    # The server's key stays out of the app folder (and so out of the image).
    server = tmp_path_factory.mktemp("server")
    cert, key = cert.rename(server / "cert.pem"), key.rename(server / "key.pem")
    return cert, key, build_image(load_app(folder), kernel).path


def get(url: str) -> tuple[int, dict[str, object]]:
    status, _, body = request(url, timeout=60)
    return status, json.loads(body)


def test_an_https_call_by_name_verifies_against_the_image_ca(
        ca_and_image: tuple[Path, Path, Path], booted: Boot, no_leftover_qemu: None) -> None:
    cert, key, image = ca_and_image
    trust = open_image(image).manifest.trust
    assert trust is not None and trust.source == "ca = ca.pem"
    with https_server(cert, key, b"hello from the api") as port, \
            booted(image, connect=(f"{API}=127.0.0.1:{port}",
                                   f"gone.example.invalid=127.0.0.1:{port}")) as vm:
        for client in ("requests", "urllib"):  # a client library, and the standard library
            status, answer = get(vm.url(f"/call?client={client}"))
            assert (status, answer) == (200, {"status": 200, "body": "hello from the api"})
        # The check is real: the same server by another name is not that server.
        status, answer = get(vm.url("/call?host=gone.example.invalid"))
        assert status == 502 and "certificate verify failed" in str(answer["detail"]), answer
        # Inside the guest the name is the app's, at its own loopback address.
        assert get(vm.url(f"/resolve?host={API}")) == (200, {"addresses": ["127.77.0.1"]})


def test_an_undeclared_name_is_not_known_at_once_and_a_dead_one_fails_only_its_call(
        ca_and_image: tuple[Path, Path, Path], booted: Boot, no_leftover_qemu: None,
        caplog: pytest.LogCaptureFixture) -> None:
    cert, key, image = ca_and_image
    with https_server(cert, key, b"still here") as port, \
            booted(image, connect=(f"{API}=127.0.0.1:{port}",)) as vm:
        for name in ("pypi.org", "localhost.localdomain", "db"):
            status, answer = get(vm.url(f"/resolve?host={name}"))
            assert answer["name_not_known"] is True, answer
            # No DNS was asked (that would take seconds to time out); how quick it is,
            # `krait bench connect` measures.
            assert isinstance(answer["ms"], float) and answer["ms"] < 1000, answer
        # Declared, but nothing answers by that name from the host: that call fails...
        with caplog.at_level(logging.WARNING, logger="krait"):
            status, answer = get(vm.url("/call?host=gone.example.invalid"))
        assert status == 502 and answer["error"] in ("ConnectionError", "SSLError"), answer
        assert any("gone.example.invalid" in r.getMessage() for r in caplog.records)
        # ... and the next call, to a service that is there, works.
        assert get(vm.url("/call")) == (200, {"status": 200, "body": "still here"})
