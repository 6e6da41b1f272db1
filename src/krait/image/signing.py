"""Who built an image: an ed25519 signature over its digest, and pins to one digest.

An image's digest is the sha256 of its manifest, and the manifest holds the digest of
every part (stored and unpacked), so a signature over the digest covers every byte that
is booted. It travels in the image as ``manifest.sig``; ``krait run --verify KEY.pub``
refuses an image it does not verify, whatever else is consistent inside (a layer and the
manifest rewritten together pass every digest check, not this one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from krait.errors import ConfigError, ImageError

# cryptography is imported where a key is used: a run that checks no signature (most)
# does not pay for it before its VM starts.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

SIGNATURE = "manifest.sig"
_KEY_HINT = "make a key pair with `krait keygen FILE` (FILE and FILE.pub)"


def _payload(digest: str) -> bytes:
    # What is signed says what it is: a signature made for anything else never verifies.
    return f"krait image sha256:{digest}\n".encode()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} ({e.strerror})",
                          hint=_KEY_HINT) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({e})",
                          hint=_KEY_HINT) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an ed25519 key", hint=_KEY_HINT)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError as e:
        raise ConfigError(f"{path}: not a PEM public key ({e})",
                          hint="pass the .pub file `krait keygen` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an ed25519 public key", hint=_KEY_HINT)
    return key


def sign(key: Ed25519PrivateKey, digest: str) -> bytes:
    return key.sign(_payload(digest))


def generate(path: Path) -> Path:
    """Write a new private key to ``path`` (0600) and its public key beside it; return
    the public key's path. An existing file is never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = path.with_name(path.name + ".pub")
    for p in (path, public):
        if p.exists():
            raise ConfigError(f"{p} exists already", hint="pick another file name")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return public


def parse_digest(value: str) -> str:
    """``sha256:HEX`` (or bare HEX) -> HEX."""
    hex_digest = value.removeprefix("sha256:").lower()
    if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
        raise ConfigError(f"--digest {value}: expected sha256: and 64 hex digits",
                          hint="`krait inspect IMAGE` shows an image's digest")
    return hex_digest


@dataclass(frozen=True)
class Trust:
    """What an image must be to boot: signed by ``key``, and/or exactly ``digest``."""

    key: Ed25519PublicKey | None = None
    digest: str | None = None

    @classmethod
    def from_flags(cls, verify: Path | None, digest: str | None) -> Trust:
        return cls(load_public_key(verify) if verify else None,
                   parse_digest(digest) if digest else None)

    def check(self, path: Path, digest: str, signature: bytes | None) -> None:
        if self.digest is not None and digest != self.digest:
            raise ImageError(f"{path}: its digest is sha256:{digest}, not the "
                             f"sha256:{self.digest} asked for",
                             hint="do not boot it: it is not the image that was pinned")
        if self.key is None:
            return
        if signature is None:
            raise ImageError(f"{path}: not signed, and --verify asks for a signature",
                             hint="build it with `krait build --sign KEY`")
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, _payload(digest))
        except InvalidSignature:
            raise ImageError(f"{path}: its signature does not verify with this key: it was "
                             "signed by another key, or changed since it was signed",
                             hint="do not boot it; rebuild and sign it again") from None
