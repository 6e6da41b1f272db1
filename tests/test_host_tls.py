"""The app folder is the build context for TLS files too: what the app's settings name
must be in it, a private key is baked only when the command line asks, and each file must
be the PEM its setting says (finding 4 of issue #20)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import BuildError, ConfigError
from krait.image.closure import GuestFile
from krait.image.tls import (
    GUEST_CA,
    GUEST_KEY,
    SYSTEM_CA,
    build_self_signed,
    tls_files,
    trust_store,
)

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key outside any app folder."""
    outside = tmp_path / "outside"
    build_self_signed(outside / "cert.pem", outside / "key.pem")
    return outside / "cert.pem", outside / "key.pem"


def app(tmp_path: Path, settings: str = "") -> Path:
    folder = tmp_path / "app"
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text("def main():\n    return 0\n")
    (folder / "krait.toml").write_text('entry = "app:main"\n' + settings)
    return folder


@pytest.mark.parametrize("name", ["/etc/ssl/private/server.key", "../outside/key.pem",
                                  "certs/../../outside/key.pem"])
def test_settings_may_name_only_files_in_the_app_folder(tmp_path: Path, name: str) -> None:
    folder = app(tmp_path, f'tls-cert = "cert.pem"\ntls-key = "{name}"\n')
    with pytest.raises(ConfigError, match="not a file in the app folder") as e:
        load_app(folder)
    assert "--tls-key PATH" in (e.value.hint or "")


def test_a_link_out_of_the_app_folder_is_refused(tmp_path: Path,
                                                 pair: tuple[Path, Path]) -> None:
    folder = app(tmp_path, 'tls-cert = "cert.pem"\ntls-key = "key.pem"\n')
    (folder / "cert.pem").symlink_to(pair[0])
    (folder / "key.pem").symlink_to(pair[1])
    with pytest.raises(BuildError, match="leads out of the app folder"):
        tls_files(replace(load_app(folder), bake_tls_key=True))


def test_a_key_the_settings_name_is_baked_only_when_asked(tmp_path: Path,
                                                          pair: tuple[Path, Path]) -> None:
    folder = app(tmp_path, 'tls-cert = "cert.pem"\ntls-key = "key.pem"\n')
    for path in pair:
        shutil.copy(path, folder / path.name)
    with pytest.raises(BuildError, match="bakes one only when asked") as e:
        tls_files(load_app(folder))
    assert "--bake-tls-key" in (e.value.hint or "")
    baked = tls_files(replace(load_app(folder), bake_tls_key=True))  # --bake-tls-key
    assert [f.guest for f in baked][1] == GUEST_KEY


def test_the_command_line_may_name_any_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    folder = app(tmp_path)
    loaded = load_app(folder, {"tls-cert": str(pair[0]), "tls-key": str(pair[1])})
    assert loaded.bake_tls_key
    assert [f.host for f in tls_files(loaded)] == list(pair)


def test_only_the_pem_a_setting_says(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh_key], check=True)
    for cert, key, words in ((pair[0], ssh_key, "not a PEM private key (an OpenSSH key)"),
                             (pair[1], pair[1], "not a PEM certificate"),
                             (pair[0], Path("/dev/zero"), "cannot be read")):
        loaded = load_app(app(tmp_path), {"tls-cert": str(cert), "tls-key": str(key)})
        with pytest.raises(BuildError, match=words.replace("(", r"\(").replace(")", r"\)")):
            tls_files(loaded)
    big = tmp_path / "big.pem"
    big.write_bytes(pair[1].read_bytes() + b"\n" * (2 << 20))
    loaded = load_app(app(tmp_path), {"tls-cert": str(pair[0]), "tls-key": str(big)})
    with pytest.raises(BuildError, match="is over 1 MiB"):
        tls_files(loaded)


def test_build_refuses_before_tracing(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from ._hostile import krait, refused

    folder = app(tmp_path, 'tls-cert = "cert.pem"\ntls-key = "/etc/shadow"\n')
    refused(krait("build", folder, "--kernel", "/usr/bin/true"), "not a file in the app folder")
    assert not list(folder.glob("*.krait"))


# -- the trust store: what the guest's TLS clients trust ---------------------------------
def test_one_trust_store_the_apps_ca_then_certifi_then_this_machines(
        tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, _ = pair
    plain = load_app(app(tmp_path))
    shutil.copy(cert, plain.root / "ca.pem")
    certifi = GuestFile("packages", "/krait/packages/certifi/cacert.pem", cert, "copy")
    own = replace(plain, ca="ca.pem")

    store, added, env = trust_store(own, [certifi], {"ssl"}, {"certifi": "2024.2.2"})
    assert store is not None and store.source == "ca = ca.pem" and store.path == GUEST_CA
    assert [f.guest for f in added] == [GUEST_CA]
    assert env == {"SSL_CERT_FILE": GUEST_CA, "REQUESTS_CA_BUNDLE": GUEST_CA}

    store, added, env = trust_store(plain, [certifi], {"ssl"}, {"certifi": "2024.2.2"})
    assert store is not None and (store.source, store.path) == ("certifi 2024.2.2",
                                                                certifi.guest)
    assert added == [] and env["SSL_CERT_FILE"] == certifi.guest

    store, added, _ = trust_store(plain, [], {"ssl"}, {})
    assert store is not None and store.source == str(SYSTEM_CA)
    assert [f.host for f in added] == [SYSTEM_CA]

    assert trust_store(plain, [], {"json"}, {}) == (None, [], {})  # no TLS, no bundle


def test_a_ca_that_is_not_a_certificate_or_leads_out_is_refused(tmp_path: Path) -> None:
    plain = load_app(app(tmp_path))
    (plain.root / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(BuildError, match="not a PEM"):
        trust_store(replace(plain, ca="ca.pem"), [], {"ssl"}, {})
    with pytest.raises(BuildError, match="out of the app folder"):
        trust_store(replace(plain, ca="../elsewhere.pem"), [], {"ssl"}, {})
