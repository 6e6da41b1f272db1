"""TLS material baked into an image: the files the user names, or a self-signed pair.

The certificate and key go into the app layer at fixed guest paths, and the app learns
them from ``KRAIT_TLS_CERT`` / ``KRAIT_TLS_KEY`` in its baked environment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from krait.config import AppConfig
from krait.errors import BuildError
from krait.image.closure import GuestFile
from krait.run import run

GUEST_CERT = "/krait/app/.krait/tls/cert.pem"
GUEST_KEY = "/krait/app/.krait/tls/key.pem"
# Where --self-signed writes its pair when the app names no files.
SELF_SIGNED_DIR = ".krait-tls"


def build_self_signed(cert: Path, key: Path, name: str = "localhost", days: int = 365) -> None:
    """A self-signed P-256 certificate for ``name`` (and 127.0.0.1), made by openssl."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"])
    key.chmod(0o600)


def with_self_signed(app: AppConfig) -> AppConfig:
    """``app`` with a certificate and key: the ones it names (made if missing) or new ones
    under .krait-tls/ in the app folder (kept, so rebuilds reuse them)."""
    cert = app.tls_cert or f"{SELF_SIGNED_DIR}/cert.pem"
    key = app.tls_key or f"{SELF_SIGNED_DIR}/key.pem"
    cert_path, key_path = app.root / cert, app.root / key
    if not (cert_path.exists() and key_path.exists()):
        build_self_signed(cert_path, key_path)
    return dataclasses.replace(app, tls_cert=cert, tls_key=key)


def tls_files(app: AppConfig) -> list[GuestFile]:
    """The app layer's certificate and key, checked to exist."""
    if not app.tls_cert or not app.tls_key:
        return []
    out = []
    for setting, name, guest in (("tls-cert", app.tls_cert, GUEST_CERT),
                                 ("tls-key", app.tls_key, GUEST_KEY)):
        path = (app.root / name).resolve()
        if not path.is_file():
            raise BuildError(f"{setting} = {name!r}: {path} does not exist",
                             hint="name an existing PEM file, or build with --self-signed "
                             "to make a pair for local use")
        if b"-----BEGIN" not in path.read_bytes()[:4096]:
            raise BuildError(f"{setting} = {name!r}: {path} is not a PEM file")
        out.append(GuestFile("app", guest, path, "copy"))
    return out


def tls_env(app: AppConfig) -> dict[str, str]:
    if not app.tls_cert:
        return {}
    return {"KRAIT_TLS_CERT": GUEST_CERT, "KRAIT_TLS_KEY": GUEST_KEY}
