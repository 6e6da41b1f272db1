"""Images through an OCI registry: ``krait push IMAGE REF``, ``krait pull REF``.

A ``.krait`` is stored as an OCI artifact, one blob per member of its tar:

    config   manifest.json     application/vnd.krait.manifest.v1+json
    layers   kernel.zst, layers/NAME.erofs.zst, layers/NAME.files.json, manifest.sig
             each application/vnd.krait.part.v1, named by its title annotation

so a registry (and anything that copies between registries) keeps every digest the
image's own manifest names, and a pull writes the very bytes that were pushed: the
members are put back in order by the same tar writer. Every blob is checked against its
digest as it arrives and the image is opened (each part checked against the manifest)
before it is kept; a pull that fails leaves no file behind.

The registry protocol is ORAS's (``oras-py``): blobs already in the registry are not sent
again. A registry on loopback is spoken to over plain HTTP, as docker does; any other
over HTTPS.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from krait.errors import ImageError
from krait.image.archive import (
    CHUNK,
    MAX_MEMBERS,
    MEMBER_RE,
    Expected,
    Image,
    expected_members,
    open_image,
    write_members,
)
from krait.image.manifest import MAX_MANIFEST, Manifest
from krait.image.signing import Trust
from krait.integrity import sha256_file
from krait.paths import cache_dir, krait_dir

log = logging.getLogger("krait")

ARTIFACT_TYPE = "application/vnd.krait.image.v1"
CONFIG_TYPE = "application/vnd.krait.manifest.v1+json"
PART_TYPE = "application/vnd.krait.part.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
DIGEST_ANNOTATION = "dev.krait.image.digest"
DEFAULT_TIMEOUT = 30.0
# The OCI distribution spec's own limit for a manifest; krait's are a few kilobytes.
MAX_OCI_MANIFEST = 4 << 20
# host[:port]/name[/name...][:tag][@sha256:...], as docker spells a reference.
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
REF_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/(?P<repo>[a-z0-9._/-]+)"
                    r"(?::(?P<tag>[A-Za-z0-9_.-]{1,128}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z")


def timeout() -> float:
    """Seconds krait waits for a registry to connect or to send the next byte."""
    value = os.environ.get("KRAIT_REGISTRY_TIMEOUT", "")
    try:
        return max(0.1, float(value)) if value else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


def is_ref(text: str) -> bool:
    """A registry reference (``localhost:5000/hello:1``), not a file name: as docker
    reads one, its first part names a registry only with a '.' or ':' or as localhost
    (``dist/hello`` is a path)."""
    match = REF_RE.match(text)
    if match is None or text.endswith(".krait"):
        return False
    host = match["host"]
    return "." in host or ":" in host or host == "localhost"


def _client(ref: str) -> tuple[Any, Any]:
    """ORAS's registry client for ``ref``'s registry, and ``ref`` as ORAS parses it."""
    import oras.logger
    import oras.provider

    class Registry(oras.provider.Registry):
        # ORAS retries each failed request five times with growing sleeps (over two
        # minutes for a registry that is down): krait says what failed at once.
        def do_request(self, *args: Any, **kwargs: Any) -> Any:
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

    oras.logger.setup_logger(quiet=True)  # its errors reach the user as krait's

    match = REF_RE.match(ref)
    if match is None:
        raise ImageError(f"{ref!r} is not a registry reference",
                         hint="write HOST[:PORT]/NAME[:TAG], e.g. localhost:5000/hello:1")
    host = match["host"].rsplit(":", 1)[0]
    loopback = host in ("localhost", "127.0.0.1", "::1")
    client = Registry(hostname=match["host"], insecure=loopback)
    # Every request (ORAS's, its token requests too) gives up on a silent registry.
    client.session.request = functools.partial(client.session.request,
                                               timeout=(timeout(), timeout()))
    return client, client.get_container(ref)


def _sha256(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class _TooMuch(ValueError):
    """A registry sent, or said it would send, more than what it sends may be."""


def _spool(chunks: Iterable[bytes], out: BinaryIO, limit: int) -> str:
    """Copy ``chunks`` (of a file, or of a response) to ``out``, never more than ``limit``
    bytes (_TooMuch beyond); return the sha256 of what was copied."""
    digest, total = hashlib.sha256(), 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise _TooMuch(f"more than the {limit} bytes it should be")
        digest.update(chunk)
        out.write(chunk)
    return "sha256:" + digest.hexdigest()


def _refused(ref: str, error: Exception) -> ImageError:
    import requests
    import urllib3

    host = ref.partition("/")[0]
    # A stall mid-body reaches krait as a ConnectionError wrapping urllib3's timeout.
    cause = error.args[0] if error.args else None
    if isinstance(error, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
        return ImageError(f"the registry at {host} sent nothing for {timeout():g} s (for "
                          f"{ref}); nothing was kept",
                          hint="try again later; KRAIT_REGISTRY_TIMEOUT sets how long krait "
                          "waits")
    if isinstance(error, requests.ConnectionError):
        return ImageError(f"cannot reach the registry at {host} (for {ref})",
                          hint="check the host and port, and that the registry runs")
    text = " ".join(str(error).split())[:300]
    return ImageError(f"the registry refused {ref}: {text}",
                      hint="check the reference, that the registry runs, and your login "
                      "(docker login writes what krait uses)")


def push(image: Image, ref: str) -> str:
    """Store ``image`` at ``ref``; return the artifact manifest's digest."""
    import requests

    remote, container = _client(ref)
    remote.auth.load_configs(container)  # `docker login`'s credentials, as pull uses
    with tempfile.TemporaryDirectory(prefix="krait-push-") as scratch:
        descriptors = []
        # open_image put manifest.json first: the artifact's config.
        for index, member in enumerate(image.members.values()):
            path = Path(scratch) / f"{index}"
            with image.stream(member.name) as source, path.open("wb") as out:
                digest = _spool(iter(lambda: source.read(CHUNK), b""), out, member.size)
            descriptor = {"mediaType": CONFIG_TYPE if index == 0 else PART_TYPE,
                          "digest": digest, "size": member.size,
                          "annotations": {TITLE: member.name}}
            descriptors.append(descriptor)
            try:
                if not remote.blob_exists(descriptor, container):
                    response = remote.upload_blob(str(path), container, descriptor)
                    response.raise_for_status()
            except (requests.RequestException, ValueError) as e:
                raise _refused(ref, e) from None
            path.unlink()
            log.info("pushed %s (%d bytes)", member.name, member.size)
    config, *layers = descriptors
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": config, "layers": layers,
                "annotations": {TITLE: image.name, DIGEST_ANNOTATION: f"sha256:{image.digest}"}}
    try:
        response = remote.upload_manifest(manifest, container)
        response.raise_for_status()
    except (requests.RequestException, ValueError) as e:
        raise _refused(ref, e) from None
    manifest_digest: str = response.headers.get("Docker-Content-Digest", "")
    return manifest_digest


def _untrusted(ref: str, problem: str) -> ImageError:
    return ImageError(f"{ref}: {problem}", hint="the registry is not to be trusted; nothing "
                      "was kept")


def _fetch(ref: str, response: Any, out: BinaryIO, limit: int) -> str:
    """A response's body into ``out``, at most ``limit`` bytes; its sha256."""
    import requests

    try:
        with response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _TooMuch(f"{int(declared)} bytes, more than the {limit} it should be")
            return _spool(response.iter_content(CHUNK), out, limit)
    except requests.RequestException as e:
        raise _refused(ref, e) from None


def _manifest(ref: str, remote: Any, container: Any) -> dict[str, Any]:
    """The artifact's manifest (at most 4 MiB), its bytes checked against the digest
    ``ref`` pins."""
    import requests

    body = io.BytesIO()
    try:
        remote.auth.load_configs(container)
        response = remote.do_request(f"{remote.prefix}://{container.manifest_url()}", "GET",
                                     headers={"Accept": OCI_MANIFEST}, stream=True)
        digest = _fetch(ref, response, body, MAX_OCI_MANIFEST)
    except _TooMuch as e:
        raise _untrusted(ref, f"its manifest is {e}") from None
    except (requests.RequestException, ValueError) as e:
        raise _refused(ref, e) from None
    pinned = REF_RE.match(ref)["digest"]  # type: ignore[index]  # _client matched it
    if pinned and digest != pinned:
        raise ImageError(f"{ref}: the registry's manifest is {digest}, not the digest asked "
                         "for", hint="nothing was kept")
    try:
        manifest = json.loads(body.getvalue())
        descriptors = [manifest["config"], *manifest.get("layers", [])]
        if not all(isinstance(d, dict) and isinstance(d.get("annotations", {}), dict)
                   for d in descriptors):
            raise TypeError
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise ImageError(f"{ref}: the registry's manifest is not an OCI image manifest",
                         hint="push the image again") from None
    if manifest["config"].get("mediaType") != CONFIG_TYPE:
        raise ImageError(f"{ref} is not a krait image (its config is "
                         f"{str(manifest['config'].get('mediaType'))[:80]!r})",
                         hint="push one with `krait push IMAGE REF`")
    if len(descriptors) > MAX_MEMBERS:
        raise ImageError(f"{ref}: the registry's manifest names {len(descriptors)} parts",
                         hint="no krait image has that many; push it again")
    return dict(manifest)


def _descriptor(ref: str, descriptor: dict[str, Any], seen: set[str]) -> tuple[str, str, int]:
    """A part's name, digest and size, as the registry's manifest gives them."""
    name = (descriptor.get("annotations") or {}).get(TITLE, "")
    digest, size = descriptor.get("digest", ""), descriptor.get("size")
    # What a .krait's tar holds: short relative names (USTAR), each once.
    if (not isinstance(name, str) or not MEMBER_RE.fullmatch(name) or ".." in name
            or name in seen):
        raise ImageError(f"{ref}: a part is named {str(name)[:80]!r}", hint="push it again")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ImageError(f"{ref}: {name} has no sha256 digest", hint="push it again")
    if type(size) is not int or size < 0:
        raise ImageError(f"{ref}: {name} has no size", hint="push it again")
    return name, digest, size


def pull(ref: str, out: Path | None = None, trust: Trust | None = None) -> Image:
    """Fetch the image at ``ref`` into ``out`` (default: the cache, by digest), checked.

    Each blob is streamed to a file beside the target, never more than its descriptor's
    size, which must be what the image's own manifest (the first blob) says; every
    request gives up after KRAIT_REGISTRY_TIMEOUT seconds without a byte."""
    remote, container = _client(ref)
    manifest = _manifest(ref, remote, container)
    folder = out.parent if out else krait_dir(cache_dir(), "pulled")
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=folder) as scratch:
        members: dict[str, Path] = {}
        expected = {"manifest.json": Expected(None, None, MAX_MANIFEST)}
        for descriptor in [manifest["config"], *manifest.get("layers", [])]:
            name, digest, size = _descriptor(ref, descriptor, set(members))
            want = expected.get(name)
            problem = (f"its first part is {name}, not manifest.json" if not members and
                       want is None else f"{name} is not a part of it" if want is None
                       else want.check_size(name, size))
            if problem:
                raise ImageError(f"{ref}: {problem}", hint="push it again; nothing was kept")
            path = members[name] = Path(scratch) / f"{len(members)}"
            with path.open("wb") as f:
                try:
                    got = _fetch(ref, remote.get_blob(container, digest, stream=True), f, size)
                except _TooMuch as e:
                    raise _untrusted(ref, f"{name} is {e}") from None
                except ValueError as e:  # ORAS's, for a login it cannot answer
                    raise _refused(ref, e) from None
            if got != digest or path.stat().st_size != size:
                raise ImageError(f"{ref}: {name} does not match its digest after the pull "
                                 f"(got {got[:23]}..., expected {digest[:23]}...)",
                                 hint="the registry or something between gave other bytes; "
                                 "nothing was kept")
            if name == "manifest.json":  # the image's own: what each other part must be
                expected = expected_members(Manifest.from_json(path.read_bytes(), Path(ref)))
        digest = sha256_file(members["manifest.json"])
        target = out or folder / f"{digest}.krait"
        candidate = Path(scratch) / target.name
        write_members(candidate, list(members.items()))
        open_image(candidate, trust)  # each part against the manifest, and trust
        candidate.replace(target)
    return open_image(target)
