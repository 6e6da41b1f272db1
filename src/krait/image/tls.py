"""TLS material baked into an image: the files the user names, or a self-signed pair.

The certificate and key go into the app layer at fixed guest paths, and the app learns
them from ``KRAIT_TLS_CERT`` / ``KRAIT_TLS_KEY`` in its baked environment.

The app folder is the build context: a file its settings name must be in it (a symlink
out of it is refused), while a file given on the command line may be anywhere. A private
key in an image is readable by whoever gets the image, so it is baked only when the build
is asked to on its command line: ``--tls-key PATH``, ``--self-signed`` (a throwaway pair
for local use) or ``--bake-tls-key``. Each file must be what its setting says (a PEM
certificate; a PEM private key a TLS library loads, not an OpenSSH key) and small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from krait.config import AppConfig
from krait.errors import BuildError
from krait.image.closure import GuestFile
from krait.image.manifest import TrustStore
from krait.paths import open_nofollow
from krait.run import run

GUEST_CERT = "/krait/app/.krait/tls/cert.pem"
GUEST_KEY = "/krait/app/.krait/tls/key.pem"
# Where --self-signed writes its pair when the app names no files.
SELF_SIGNED_DIR = ".krait-tls"
# A certificate chain is kilobytes.
MAX_PEM = 1 << 20
# Where the trusted certificates go when the image carries its own bundle, and the
# bundle of the machine that builds (Debian's ca-certificates).
GUEST_CA = "/krait/app/.krait/ca.pem"
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
_PEM = {"tls-cert": re.compile(rb"-----BEGIN CERTIFICATE-----"),
        "ca": re.compile(rb"-----BEGIN CERTIFICATE-----"),
        "tls-key": re.compile(rb"-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----")}


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
    return dataclasses.replace(app, tls_cert=cert, tls_key=key, bake_tls_key=True)


def _checked(app: AppConfig, setting: str, name: str) -> Path:
    """The file ``name`` (a setting's value) names, if it may be baked and is PEM."""
    # An absolute name (from the command line) stays as it is; the file is read from where
    # it was checked, whatever a link there is changed to afterwards.
    path = (app.root / name).resolve()
    if not Path(name).is_absolute():
        root = app.root.resolve()
        if not path.is_relative_to(root):
            raise BuildError(f"{setting} = {name!r} leads out of the app folder ({path})",
                             hint=f"copy the file into {root}, or name it on the command "
                             f"line (--{setting} PATH)")
    try:
        with open(open_nofollow(path), "rb") as f:
            head = f.read(MAX_PEM + 1)
    except OSError as e:
        raise BuildError(f"{setting} = {name!r}: {path} cannot be read ({e.strerror or e})",
                         hint="name an existing PEM file, or build with --self-signed "
                         "to make a pair for local use") from None
    if len(head) > MAX_PEM:
        raise BuildError(f"{setting} = {name!r}: {path} is over {MAX_PEM >> 20} MiB")
    if not _PEM[setting].search(head[:65536]):
        what = "an OpenSSH key" if b"OPENSSH PRIVATE KEY" in head[:65536] else "not one"
        kind = "private key" if setting == "tls-key" else "certificate"
        raise BuildError(f"{setting} = {name!r}: {path} is not a PEM {kind} ({what})",
                         hint="a TLS library loads PEM files: -----BEGIN CERTIFICATE-----, "
                         "-----BEGIN PRIVATE KEY-----")
    return path


def tls_files(app: AppConfig) -> list[GuestFile]:
    """The app layer's certificate and key, checked to exist, to be in the app folder
    unless named on the command line, and to be what they say; the key only if asked."""
    if not app.tls_cert or not app.tls_key:
        return []
    if not app.bake_tls_key:
        raise BuildError(f"tls-key = {app.tls_key!r}: a private key in the image is readable "
                         "by whoever has the image, so krait bakes one only when asked",
                         hint="build with `krait build --bake-tls-key` (the image is then "
                         "0600), or give it as --tls-key PATH")
    return [GuestFile("app", guest, _checked(app, setting, name), "copy")
            for setting, name, guest in (("tls-cert", app.tls_cert, GUEST_CERT),
                                         ("tls-key", app.tls_key, GUEST_KEY))]


def tls_env(app: AppConfig) -> dict[str, str]:
    if not app.tls_cert:
        return {}
    return {"KRAIT_TLS_CERT": GUEST_CERT, "KRAIT_TLS_KEY": GUEST_KEY}


def trust_store(app: AppConfig, files: list[GuestFile], modules: frozenset[str] | set[str],
                packages: dict[str, str]) -> tuple[TrustStore | None, list[GuestFile],
                                                   dict[str, str]]:
    """What the guest's TLS clients trust, the file to add for it, and the environment
    that points OpenSSL (``SSL_CERT_FILE``) and requests (``REQUESTS_CA_BUNDLE``) at it:
    the app's own ``ca``; else certifi's bundle, if the app ships certifi; else this
    machine's ca-certificates, if the app uses ssl at all. One bundle for every client,
    so the standard library and requests/httpx agree on what is trusted."""
    if app.ca:
        path = _checked(app, "ca", app.ca)
        store = TrustStore(f"ca = {app.ca}", _sha256(path), GUEST_CA)
        added = [GuestFile("app", GUEST_CA, path, "copy")]
    elif certifi := next((f for f in files if f.guest.endswith("/certifi/cacert.pem")), None):
        version = packages.get("certifi", "")
        store = TrustStore(f"certifi {version}".strip(), _sha256(certifi.host), certifi.guest)
        added = []
    elif "ssl" in modules and SYSTEM_CA.is_file():
        store = TrustStore(str(SYSTEM_CA), _sha256(SYSTEM_CA), GUEST_CA)
        added = [GuestFile("app", GUEST_CA, SYSTEM_CA, "copy")]
    else:
        return None, [], {}
    return store, added, {"SSL_CERT_FILE": store.path, "REQUESTS_CA_BUNDLE": store.path}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
