"""A throwaway PostgreSQL on the host's loopback, for apps that keep state outside the VM."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from krait.vmm.ports import free_port


def find_pg_bin() -> Path | None:
    """Debian's PostgreSQL binaries (postgresql-NN), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str
    datadir: Path

    def dsn(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        return (f"host={host} port={port or self.port} dbname=postgres user={self.user} "
                f"password={self.password} sslmode=disable gssencmode=disable")


@contextlib.contextmanager
def start_postgres(pg_bin: Path) -> Iterator[Postgres]:
    """initdb into a fresh folder, start on 127.0.0.1:<free port>; always stopped and removed.

    PostgreSQL refuses to run as root: as root, it runs as the `postgres` user."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="krait-pg-"))
    datadir = folder / "data"
    pwfile = folder / "pw"
    password = os.urandom(8).hex()
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    pg_ctl = [*as_user, str(pg_bin / "pg_ctl"), "-D", str(datadir)]
    started = False
    try:
        subprocess.run([*as_user, pg_bin / "initdb", "-D", datadir, "-U", "notes",
                        f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                        "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, timeout=120)
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                   f"-c unix_socket_directories={folder} -c fsync=off")
        subprocess.run([*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "-t", "60",
                        "start"], check=True, capture_output=True, timeout=90)
        started = True
        yield Postgres(port, "notes", password, datadir)
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"],
                           capture_output=True, timeout=60)
            pid_file = datadir / "postmaster.pid"
            if pid_file.exists():  # still up: make sure it goes
                subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True,
                               timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
