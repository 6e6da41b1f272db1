"""Notes keeps its state in a real PostgreSQL on the host: nothing is lost across reboots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.guest import protocol
from krait.image.archive import open_image
from krait.kernel import Kernel

from ._examples import booted, build_example, get_json, request
from ._postgres import Postgres, find_pg_bin, start_postgres

pytestmark = pytest.mark.vm


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; `make deps`)")
    with start_postgres(pg_bin) as pg:
        yield pg


def test_notes_survive_a_reboot(kernel: Kernel, tmp_path: Path, postgres: Postgres,
                                no_leftover_qemu: None) -> None:
    image = build_example("notes", kernel, tmp_path)
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
        kernel: Kernel, tmp_path: Path, postgres: Postgres, no_leftover_qemu: None) -> None:
    """A database that is not there is an answer (503), not a crash of the VM; and a
    database the image did not declare cannot be reached, though it runs on the host."""
    image = build_example("notes", kernel, tmp_path)
    from krait.vmm.ports import free_port

    down = (f"db=127.0.0.1:{free_port()}",)  # declared, but nothing listens there
    undeclared = postgres.dsn(protocol.GATEWAY)  # the host's loopback, as the guest sees it
    for dsn, connect in ((postgres.dsn(port=5432), down), (undeclared, ())):
        with booted(image, env={"NOTES_DSN": dsn + " connect_timeout=3"},
                    connect=connect) as vm:
            status, err = get_json(vm.url("/notes"))
            assert status == 503 and "database unavailable" in err["error"], err
            assert get_json(vm.url("/"))[0] == 200
