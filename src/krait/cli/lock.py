"""``krait lock``: resolve the app's declared dependencies into krait.lock."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from krait.cli._output import console, err_console
from krait.config import load_app
from krait.image.environment import base_interpreter
from krait.image.lock import LockMode, declared_dependencies, ensure_lock, read_lock


@click.command("lock")
@click.argument("app_dir", default=".", type=click.Path(path_type=Path))
@click.option("--upgrade", is_flag=True, help="Resolve everything again to the newest versions "
              "the declared dependencies allow.")
@click.option("-P", "--upgrade-package", "packages", multiple=True, metavar="NAME",
              help="Let only this package move to its newest allowed version.")
def command(app_dir: Path, upgrade: bool, packages: tuple[str, ...]) -> None:
    """Pin APP_DIR's declared dependencies, with hashes, in krait.lock."""
    app = load_app(app_dir)
    declared = declared_dependencies(app)
    if declared.empty:
        err_console.print(f"krait: the app declares no dependencies ({escape(declared.where)}); "
                          "nothing to lock")
        return
    before = read_lock(app)
    interpreter = base_interpreter(app)
    mode = LockMode.UPGRADE if upgrade else LockMode.AUTO
    with err_console.status("resolving") as status:
        lock = ensure_lock(app, interpreter, mode, lambda s: status.update(escape(s)), packages)
    assert lock is not None
    old = before.pins if before else {}
    for name, version in sorted(lock.pins.items()):
        if name not in old:
            console.print(f"  + {name}=={version}")
        elif old[name] != version:
            console.print(f"  ~ {name} {old[name]} -> {version}")
    for name in sorted(set(old) - set(lock.pins)):
        console.print(f"  - {name}=={old[name]}")
    console.print(f"{escape(str(lock.path))}: {len(lock.pins)} packages for "
                  f"{interpreter.short} ({escape(declared.where)})")
