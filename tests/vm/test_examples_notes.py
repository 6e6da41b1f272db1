"""Notes keeps its state in a real PostgreSQL on the host: nothing is lost across reboots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.config import load_app
from krait.guest import protocol
from krait.image.archive import open_image
from krait.image.build import build_image
from krait.kernel import Kernel

from ._examples import EXAMPLES, bare_copy, build_example, get_json, request
from ._postgres import Postgres, find_pg_bin, start_postgres
from .conftest import Boot

pytestmark = pytest.mark.vm


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; `make deps`)")
    with start_postgres(pg_bin) as pg:
        yield pg


@pytest.fixture(scope="module")
def notes_image(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example from a bare copy, built once for the tests that boot it as it is."""
    return build_example("notes", kernel, tmp_path_factory.mktemp("notes"))


def test_notes_survive_a_reboot(notes_image: Path, postgres: Postgres,
                                no_leftover_qemu: None, booted: Boot) -> None:
    image = notes_image
    modules = set(open_image(image).manifest.modules)
    assert "psycopg_binary._psycopg" in modules  # the compiled driver, libpq bundled
    # As on a laptop: the database at 127.0.0.1:5432 (the image's connect), which leads to
    # wherever this PostgreSQL listens on the host.
    env = {"NOTES_DSN": postgres.dsn(port=5432)}
    connect = (f"db=127.0.0.1:{postgres.port}",)
    written = []
    with booted(image, env=env, connect=connect) as vm:
        assert get_json(vm.url("/notes")) == (200, [])
        for i in range(5):
            status, note = get_json(vm.url("/notes"), "POST",
                                    {"title": f"note {i}", "body": f"body {i} ünïcödé"})
            assert status == 201, note
            written.append(note)
        status, _ = get_json(vm.url(f"/notes/{written[1]['id']}"), "DELETE")
        assert status == 204
        assert get_json(vm.url(f"/notes/{written[1]['id']}"))[0] == 404
        assert get_json(vm.url("/notes"), "POST", {"body": "no title"})[0] == 400
    kept = [n for i, n in enumerate(written) if i != 1]
    # A new VM from the same image: the state was never in it.
    with booted(image, env=env, connect=connect) as vm:
        assert get_json(vm.url("/notes")) == (200, kept)
        for note in kept:
            assert get_json(vm.url(f"/notes/{note['id']}")) == (200, note)
        assert request(vm.url("/notes/999999"))[0] == 404


def test_notes_without_database_answers_503_and_reaches_nothing_undeclared(
        notes_image: Path, postgres: Postgres, no_leftover_qemu: None, booted: Boot) -> None:
    """A database that is not there is an answer (503), not a crash of the VM; and a
    database the image did not declare cannot be reached, though it runs on the host."""
    image = notes_image
    from krait.vmm.ports import free_port

    down = (f"db=127.0.0.1:{free_port()}",)  # declared, but nothing listens there
    undeclared = postgres.dsn(protocol.GATEWAY)  # the host's loopback, as the guest sees it
    for dsn, connect in ((postgres.dsn(port=5432), down), (undeclared, ())):
        with booted(image, env={"NOTES_DSN": dsn + " connect_timeout=3"},
                    connect=connect) as vm:
            status, err = get_json(vm.url("/notes"))
            assert status == 503 and "database unavailable" in err["error"], err
            assert get_json(vm.url("/"))[0] == 200


def test_notes_reaches_its_database_by_name(kernel: Kernel, tmp_path: Path,
                                            postgres: Postgres, no_leftover_qemu: None,
                                            booted: Boot) -> None:
    """The example, as an operator would deploy it against a database host by name: libpq
    resolves `db.internal` inside the guest (glibc, /etc/hosts) and the host connects
    to wherever --connect says that name is."""
    folder = bare_copy(EXAMPLES / "notes", tmp_path)
    settings = folder / "pyproject.toml"
    text = settings.read_text()
    assert 'connect = ["db=127.0.0.1:5432"]' in text
    settings.write_text(text.replace('connect = ["db=127.0.0.1:5432"]',
                                     'connect = ["db.internal:5432"]'))
    image = build_image(load_app(folder), kernel, tmp_path / "notes.krait").path
    with booted(image, env={"NOTES_DSN": postgres.dsn(host="db.internal", port=5432)},
                connect=(f"db.internal=127.0.0.1:{postgres.port}",)) as vm:
        status, note = get_json(vm.url("/notes"), "POST", {"title": "by name", "body": "ok"})
        assert status == 201, note
        assert get_json(vm.url("/notes")) == (200, [note])
