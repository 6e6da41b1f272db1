"""Property tests with hostile input: what a client or a config file can send krait.

A small budget runs in `make test`; `make fuzz` runs the same with many more examples
(KRAIT_FUZZ=1, see conftest.py). Each property says what must hold for every input:
an answer or krait's own error, never another exception, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from krait.config import load_app
from krait.config.settings import SETTINGS
from krait.errors import ConfigError, ImageError
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits as GatewayLimits
from krait.guest import http
from krait.guest.protocol import decode_boot, encode_boot
from krait.image.archive import open_image
from krait.image.manifest import Manifest

from ._manifests import crafted, manifest
from .test_fleet_gateway import run_gateway

LIMITS = http.Limits(max_body=4096, body_budget=1 << 20, header_timeout=0.2,
                     keep_alive_timeout=0.2, read_timeout=0.2, write_timeout=0.2)
TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_.!~", min_size=1,
                max_size=12)


class NullWriter:
    """Where read_request writes "100 Continue"."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


async def read_all(data: bytes, pieces: int = 1) -> list[http.Request]:
    """Every request in ``data`` (fed in ``pieces``), as the server's loop reads them."""
    reader = asyncio.StreamReader()
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        reader.feed_data(data[i:i + step])
    reader.feed_eof()
    stream = http.Stream(reader)
    budget = http.Budget(LIMITS.body_budget)
    requests: list[http.Request] = []
    while True:
        req = await http.read_request(stream, LIMITS, budget, NullWriter(),  # type: ignore[arg-type]
                                      first=not requests)
        if req is None:
            return requests
        budget.give(req.held)
        assert budget.held == 0
        requests.append(req)


def parse(data: bytes, pieces: int = 1) -> list[http.Request] | int:
    """The requests, or the status the server answers; nothing else may come out."""
    async def go() -> list[http.Request] | int:
        try:
            return await asyncio.wait_for(read_all(data, pieces), 5)
        except http.HttpError as e:
            assert e.status in http.REASONS, e.status
            return e.status

    return asyncio.run(go())


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.integers(1, 8))
def test_any_bytes_give_requests_or_an_error_status(data: bytes, pieces: int) -> None:
    parse(data, pieces)


# Requests with the parts a parser can get wrong: header case and spacing, chunking.
@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str, str, bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]))
    path = "/" + "/".join(draw(st.lists(TOKEN, max_size=4)))
    if draw(st.booleans()):
        path += "?" + draw(TOKEN) + "=" + draw(TOKEN)
    body = draw(st.binary(max_size=3000))
    headers = [(draw(TOKEN).replace("-", "x") + "-h", draw(st.text(
        alphabet=string.printable.strip() + " ", max_size=30)).strip())
        for _ in range(draw(st.integers(0, 5)))]
    head = [f"{method} {path} HTTP/1.1"]
    head += [f"X-{k}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{v}" for k, v in headers]
    if draw(st.booleans()):
        name = draw(st.sampled_from(["Transfer-Encoding", "transfer-encoding",
                                     "TRANSFER-ENCODING"]))
        head.append(f"{name}: chunked")
        sizes = draw(st.lists(st.integers(1, 700), max_size=6))
        out, rest = bytearray(), body
        for n in sizes:
            piece, rest = rest[:n], rest[n:]
            if piece:
                out += b"%x\r\n%s\r\n" % (len(piece), piece)
        if rest:
            out += b"%X;ext=y\r\n%s\r\n" % (len(rest), rest)
        out += b"0\r\n"
        if draw(st.booleans()):
            out += b"Trailer: v\r\n"
        out += b"\r\n"
        payload = bytes(out)
    else:
        head.append(f"{draw(st.sampled_from(['Content-Length', 'content-length']))}: {len(body)}")
        payload = body
    raw = "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + payload
    return raw, method, path, body


@given(st.lists(requests(), min_size=1, max_size=3), st.integers(1, 16))
def test_well_formed_requests_parse_back_in_turn(reqs: list[tuple[bytes, str, str, bytes]],
                                                 pieces: int) -> None:
    got = parse(b"".join(r[0] for r in reqs), pieces)
    assert isinstance(got, list), got
    assert [(r.method, r.target, r.body) for r in got] == [(m, p, b) for _, m, p, b in reqs]


@given(requests(), st.integers(0, 2999))
def test_a_request_cut_short_is_an_error_or_nothing(req: tuple[bytes, str, str, bytes],
                                                    cut: int) -> None:
    raw = req[0]
    assume(cut < len(raw))
    got = parse(raw[:cut])
    assert got == [] or got in (400, 408), got


@given(st.text(alphabet="%0123456789abcdefABCDEFgz/ \u00e9", max_size=24))
def test_the_guests_unquote_is_urllibs(text: str) -> None:
    from urllib.parse import unquote

    assert http.unquote(text) == unquote(text)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@given(st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_boot_settings_survive_their_disk(values: dict[str, Any]) -> None:
    data = encode_boot(values)
    assert len(data) % 512 == 0
    assert decode_boot(data) == values


SETTING_KEYS = [s.key for s in SETTINGS] + ["tool", "project", "entyr", ""]
TOML_VALUES = (st.text(max_size=20) | st.integers(-2**70, 2**70) | st.booleans()
               | st.floats(allow_nan=False) | st.lists(st.text(max_size=10), max_size=3)
               | st.lists(st.integers(0, 70000), max_size=3))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)  # TOML reads Python's float forms, inf included
    return json.dumps(value)  # strings and integers: JSON's forms are TOML's


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.dictionaries(st.sampled_from(SETTING_KEYS), TOML_VALUES, max_size=6),
       where=st.sampled_from(["krait.toml", "pyproject.toml"]))
def test_any_settings_load_or_are_a_config_error(tmp_path: Path, table: dict[str, Any],
                                                 where: str) -> None:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    if where == "pyproject.toml":
        lines.insert(0, "[tool.krait]")
    for name in ("krait.toml", "pyproject.toml"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / where).write_text("\n".join(lines) + "\n")
    try:
        load_app(tmp_path)
    except ConfigError as e:
        assert e.message


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.binary(max_size=300), where=st.sampled_from(["krait.toml", "pyproject.toml"]))
def test_any_config_file_loads_or_is_a_config_error(tmp_path: Path, text: bytes,
                                                    where: str) -> None:
    for name in ("krait.toml", "pyproject.toml"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / where).write_bytes(text)
    try:
        load_app(tmp_path)
    except ConfigError as e:
        assert e.message


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.sampled_from([
    "[tool]\nkrait = 3\n", "tool = 3\n", "[tool.krait]\nentry = 'a:b'\n[project]\nname = 3\n",
    "project = 3\n[tool.krait]\nentry = 'a:b'\n", "[tool.krait]\nentry = 'a:b'\n"
    "[project]\noptional-dependencies = 3\n", "[tool.krait]\nentry = 'a:b'\n[project]\n"
    "dependencies = 'flask'\n", "[tool.krait]\nentry = 'a:b'\n[project]\n"
    "optional-dependencies = {x = 3}\n",
]))
def test_odd_shapes_of_pyproject_are_config_errors_or_load(tmp_path: Path, text: str) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    try:
        load_app(tmp_path)
    except ConfigError as e:
        assert e.message


CLIENT = st.sampled_from(["request", "silent", "partial", "garbage", "close", "reset"])
PER_CLIENT = 20


@settings(max_examples=300 if os.environ.get("KRAIT_FUZZ") else 15,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CLIENT, min_size=1, max_size=PER_CLIENT))
def test_the_gateway_survives_any_mix_of_clients(clients: list[str]) -> None:
    """Whatever the others do, each well-behaved client is answered, and afterwards the
    gateway holds no connection. (All come from 127.0.0.1: at most the per-client cap of
    them, or the cap's 503 is the right answer; tests/test_fleet_gateway.py checks that.)"""

    async def client(port: int, how: str) -> bytes | None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if how == "request":
                writer.write(b"GET / HTTP/1.0\r\n\r\n")
            elif how == "partial":
                writer.write(b"GET / HT")
            elif how == "garbage":
                writer.write(bytes(range(256)) * 4)
            await writer.drain()
            if how == "close":
                return None
            if how == "partial":  # and give up on it (the instance would time it out)
                await asyncio.sleep(0.5)
                return None
            if how == "reset":
                writer.transport.abort()
                return None
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    async def test(gw: Any, driver: Any, clock: Any) -> None:
        answers = await asyncio.gather(*(client(gw.port, how) for how in clients),
                                       return_exceptions=True)
        for how, answer in zip(clients, answers, strict=True):
            if how == "request":
                assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.0 200"), answer
        deadline = asyncio.get_running_loop().time() + 5
        while gw.pool.connections:
            assert asyncio.get_running_loop().time() < deadline, gw.pool.connections
            await asyncio.sleep(0.02)
        assert not gw.pool.waiting and not gw.pool.per_client

    run_gateway(test, ScalePolicy(idle_seconds=30, max_instances=2, per_instance=4),
                limits=GatewayLimits(first_byte_timeout=0.3, max_per_client=PER_CLIENT))


# -- images: what anyone may hand krait ------------------------------------------------

def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: keys of objects, indexes of lists."""
    out = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, inner in items:
        out += _paths(inner, (*prefix, key))
    return out


_MANIFEST = json.loads(manifest().to_json())
_PLACES = _paths(_MANIFEST)[1:]


@given(st.lists(st.tuples(st.sampled_from(_PLACES), JSON | st.floats()), max_size=4),
       st.booleans())
def test_any_manifest_is_a_manifest_or_an_image_error(changes: list[tuple[Any, Any]],
                                                      drop: bool) -> None:
    data = copy.deepcopy(_MANIFEST)
    for place, value in changes:
        *parents, last = place
        target = data
        try:
            for key in parents:
                target = target[key]
            if drop and isinstance(target, dict):
                target.pop(last, None)
            else:
                target[last] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change took that place away
    with contextlib.suppress(ImageError):
        Manifest.from_json(json.dumps(data).encode(), Path("x.krait"))


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_manifest_or_an_image_error(raw: bytes) -> None:
    with contextlib.suppress(ImageError):
        Manifest.from_json(raw, Path("x.krait"))


_IMAGE: list[bytes] = []


def _good_image() -> bytes:
    """A real .krait file (made once), for flipping bytes of."""
    if not _IMAGE:
        with tempfile.TemporaryDirectory() as folder:
            _IMAGE.append(crafted(Path(folder) / "x.krait").read_bytes())
    return _IMAGE[0]


@given(st.data())
def test_any_file_is_an_image_or_an_image_error(data: st.DataObject) -> None:
    good = _good_image()
    how = data.draw(st.sampled_from(["flip", "cut", "bytes", "splice"]))
    if how == "flip":  # a few bytes changed, most often in the headers and the manifest
        flipped = bytearray(good)
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, min(len(flipped) - 1, data.draw(st.sampled_from(
                [1024, 4096, len(flipped) - 1])))))
            flipped[at] = data.draw(st.integers(0, 255))
        blob = bytes(flipped)
    elif how == "cut":
        blob = good[:data.draw(st.integers(0, len(good)))]
    elif how == "splice":  # a piece of it moved elsewhere
        start = data.draw(st.integers(0, len(good)))
        end = data.draw(st.integers(start, min(len(good), start + 2048)))
        at = data.draw(st.integers(0, len(good)))
        blob = good[:at] + good[start:end] + good[at:]
    else:
        blob = data.draw(st.binary(max_size=4096))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.krait"
        path.write_bytes(blob)
        try:
            image = open_image(path)
            image.files()
        except ImageError:
            pass
