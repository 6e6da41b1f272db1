"""Signed images: a signature over the digest covers every byte, and `--verify` refuses
what another key signed, what no key signed and what was rewritten consistently."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from krait.errors import ConfigError, ImageError
from krait.image.archive import open_image
from krait.image.signing import (
    SIGNATURE,
    Trust,
    generate,
    load_private_key,
    load_public_key,
)

from ._manifests import crafted


def signed_image(tmp_path: Path, key: Path | None) -> Path:
    return crafted(tmp_path / "hello.krait", key=load_private_key(key) if key else None)


def rewritten(path: Path, out: Path) -> Path:
    """The image with its kernel replaced and the manifest updated to match: every digest
    check inside passes; the old signature is kept."""
    signature = open_image(path).read(SIGNATURE)
    return crafted(out, kernel=b"another kernel",
                   members=lambda members: [*members, (SIGNATURE, signature)])


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "signing.key"
    return private, generate(private)


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public == private.with_name("signing.key.pub")
    load_private_key(private), load_public_key(public)
    with pytest.raises(ConfigError, match="exists already"):
        generate(private)


def test_a_signed_image_verifies_with_its_key(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    path = signed_image(tmp_path, private)
    image = open_image(path, Trust.from_flags(public, None))
    assert open_image(path, Trust.from_flags(None, f"sha256:{image.digest}")).digest == \
        image.digest


def test_another_key_or_no_signature_is_refused(tmp_path: Path,
                                                keys: tuple[Path, Path]) -> None:
    _, public = keys
    other = tmp_path / "other.key"
    generate(other)
    with pytest.raises(ImageError, match="does not verify with this key"):
        open_image(signed_image(tmp_path, other), Trust.from_flags(public, None))
    (tmp_path / "hello.krait").unlink()
    unsigned = signed_image(tmp_path, None)
    open_image(unsigned)  # fine without --verify
    with pytest.raises(ImageError, match="not signed"):
        open_image(unsigned, Trust.from_flags(public, None))


def test_a_consistent_rewrite_passes_the_digests_but_not_the_signature(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    evil = rewritten(signed_image(tmp_path, private), tmp_path / "evil.krait")
    open_image(evil)  # every part matches the (rewritten) manifest
    with pytest.raises(ImageError, match="changed since it was signed"):
        open_image(evil, Trust.from_flags(public, None))


def test_a_pinned_digest_refuses_any_other_image(tmp_path: Path) -> None:
    path = signed_image(tmp_path, None)
    with pytest.raises(ImageError, match="not the sha256:" + "0" * 64):
        open_image(path, Trust.from_flags(None, "sha256:" + "0" * 64))


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 64, "z" * 64])
def test_a_digest_that_is_not_one_is_refused(digest: str) -> None:
    with pytest.raises(ConfigError, match="64 hex digits"):
        Trust.from_flags(None, digest)


def test_keys_that_are_not_ed25519_keys_are_refused(tmp_path: Path,
                                                    keys: tuple[Path, Path]) -> None:
    private, _ = keys
    junk = tmp_path / "junk"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        load_private_key(junk)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(junk)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(private)  # the private half where the public one goes
    with pytest.raises(ConfigError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")
