"""krait's command line: one module per command, each thin (parse, call, print)."""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.logging import RichHandler
from rich.markup import escape

from krait import __version__
from krait.cli import (
    bench,
    build,
    export,
    init,
    inspect,
    kernel,
    keygen,
    lock,
    logs,
    ps,
    pull,
    push,
    replace,
    rm,
    run,
    serve,
    settings,
    snapshot,
    stop,
    volume,
)
from krait.cli._output import err_console, visible
from krait.errors import KraitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="krait")
@click.option("--debug", is_flag=True, help="Show every command krait runs.")
def cli(debug: bool) -> None:
    """krait: turn a Python app into a unikernel and boot it."""
    # Nothing krait makes (cache entries, folders, images) is writable by other users,
    # whatever umask it was started with: see krait.paths.
    os.umask(os.umask(0o022) | 0o022)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False,
                              markup=False)])


for module in (build, lock, run, inspect, kernel, bench, settings, ps, logs, stop, rm, serve,
               replace, snapshot, keygen, volume, init, push, pull, export):
    cli.add_command(module.command)


def _message(text: str, limit: int = 4000) -> str:
    """An error's text, markup escaped, controls shown, and not endless."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return escape(visible(text, newlines=True))


def main() -> None:
    try:
        cli(standalone_mode=False)
    except KraitError as e:
        # Messages are printed verbatim: "[tool.krait]" is text here, not rich markup,
        # and what they quote from an image or a file cannot drive the terminal.
        err_console.print(f"[bold red]error:[/] {_message(e.message)}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {_message(e.hint)}", highlight=False)
        sys.exit(getattr(e, "exit_code", 1))
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:  # a bug in krait: say so plainly; the traceback is for --debug
        logging.getLogger("krait").debug("internal error", exc_info=True)
        err_console.print(f"[bold red]internal error:[/] {type(e).__name__}: "
                          f"{_message(str(e))}")
        err_console.print("[yellow]hint:[/] rerun with --debug for the traceback, and report it")
        sys.exit(70)
