"""The self-hosting website: a static site over HTTPS (TLS 1.3), HTTP redirecting to it."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from krait.image.archive import open_image
from krait.kernel import Kernel

from ._examples import EXAMPLES, bare_copy, booted
from .conftest import krait_cli

pytestmark = pytest.mark.vm
SITE = EXAMPLES / "website" / "site"


def client(port: int, cert: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(cert))  # trust only the baked cert
    return http.client.HTTPSConnection("localhost", port, context=context, timeout=30)


def fetch(conn: http.client.HTTPConnection, method: str, path: str,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def first_fetch(port: int, cert: Path) -> http.client.HTTPSConnection:
    """kind = "main" says ready when the app starts, before it listens: retry a while."""
    deadline = time.monotonic() + 60
    while True:
        conn = client(port, cert)
        try:
            conn.connect()
            return conn
        except (ConnectionError, TimeoutError):
            conn.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_website_over_https(kernel: Kernel, tmp_path: Path, no_leftover_qemu: None) -> None:
    image = tmp_path / "website.krait"
    folder = bare_copy(EXAMPLES / "website", tmp_path)
    proc = krait_cli("build", folder, "--self-signed", "-o", image, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert = folder / ".krait-tls" / "cert.pem"
    assert "ssl" in open_image(image).manifest.modules
    assert image.stat().st_mode & 0o777 == 0o600  # it holds the TLS key
    with booted(image, guest_ports=(8443, 8080)) as vm:
        https = vm.ports[8443]
        conn = first_fetch(https, cert)
        status, headers, body = fetch(conn, "GET", "/")
        assert status == 200 and body == (SITE / "index.html").read_bytes()
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert conn.sock.version() == "TLSv1.3"
        served = conn.sock.getpeercert(binary_form=True)
        assert served == ssl.PEM_cert_to_DER_cert(cert.read_text())
        etag = headers["etag"]
        # Same connection (keep-alive): conditional GET, HEAD, other types, 404, traversal.
        assert fetch(conn, "GET", "/", {"If-None-Match": etag})[0] == 304
        assert fetch(conn, "GET", "/", {"If-None-Match": '"other"'})[0] == 200
        status, headers, body = fetch(conn, "HEAD", "/css/style.css")
        assert status == 200 and body == b""
        assert headers["content-type"] == "text/css; charset=utf-8"
        assert int(headers["content-length"]) == (SITE / "css" / "style.css").stat().st_size
        for path, ctype in (("/logo.svg", "image/svg+xml; charset=utf-8"),
                            ("/favicon.png", "image/png")):
            status, headers, body = fetch(conn, "GET", path)
            assert status == 200 and headers["content-type"] == ctype
            assert hashlib.sha256(body).digest() == hashlib.sha256(
                (SITE / path.lstrip("/")).read_bytes()).digest()
        status, headers, _ = fetch(conn, "GET", "/about")
        assert status == 301 and headers["location"] == "/about/"
        status, _, body = fetch(conn, "GET", "/about/")
        assert status == 200 and body == (SITE / "about" / "index.html").read_bytes()
        assert fetch(conn, "GET", "/nope.html")[0] == 404
        for evil in ("/../app.py", "/css/../../app.py", "/%2e%2e/app.py", "/..%2f..%2fetc/passwd",
                     "/../../../../etc/passwd", "/../.krait-tls/key.pem"):
            status, _, body = fetch(conn, "GET", evil)
            assert status == 404, evil
            assert b"PRIVATE KEY" not in body and b"import" not in body
        conn.close()
        # TLS 1.2 is refused.
        old = ssl.create_default_context(cafile=str(cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        legacy = http.client.HTTPSConnection("localhost", https, context=old, timeout=30)
        with pytest.raises(ssl.SSLError):
            legacy.request("GET", "/")
            legacy.getresponse()
        legacy.close()
        # Plain HTTP redirects to HTTPS, keeping the path.
        plain = http.client.HTTPConnection("127.0.0.1", vm.ports[8080], timeout=30)
        status, headers, _ = fetch(plain, "GET", "/about/")
        assert status == 301 and headers["location"] == "https://127.0.0.1:8443/about/"
        plain.close()


# A self-signed certificate has no CA that could revoke it, so it names no CRL or OCSP
# responder; a certificate from a CA (tls-cert) does. Every other finding counts.
SELF_SIGNED_ONLY = {"cert_revocation"}


def test_testssl_finds_nothing_high_or_critical(kernel: Kernel, tmp_path: Path,
                                                no_leftover_qemu: None) -> None:
    testssl = shutil.which("testssl")
    if testssl is None:
        pytest.fail("testssl.sh is not installed (apt-get install testssl.sh; `make deps`)")
    image = tmp_path / "website.krait"
    folder = bare_copy(EXAMPLES / "website", tmp_path)
    proc = krait_cli("build", folder, "--self-signed", "-o", image, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = tmp_path / "testssl.json"
    with booted(image, guest_ports=(8443, 8080)) as vm:
        first_fetch(vm.ports[8443], folder / ".krait-tls" / "cert.pem").close()
        scan = subprocess.run(
            [testssl, "--quiet", "--warnings", "off", "--nodns", "min", "--ip", "127.0.0.1",
             "--add-ca", str(folder / ".krait-tls" / "cert.pem"),
             "--jsonfile", str(report), f"https://localhost:{vm.ports[8443]}"],
            capture_output=True, text=True, timeout=900)
    findings = json.loads(report.read_text())
    assert not [f for f in findings if f["severity"] == "FATAL"], scan.stdout[-2000:]
    serious = [f"{f['id']}: {f['finding']}" for f in findings
               if f["severity"] in ("HIGH", "CRITICAL") and f["id"] not in SELF_SIGNED_ONLY]
    assert serious == []
    # It really scanned: what it says of the protocols is what the site offers.
    offered = {f["id"]: f["finding"] for f in findings if f["id"].startswith(("SSL", "TLS1"))}
    assert offered["TLS1_3"].startswith("offered") and offered["TLS1_2"] == "not offered"
