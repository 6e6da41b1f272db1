"""krait's command line: one module per command, each thin (parse, call, print)."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from krait import __version__
from krait.errors import KraitError

# Each command is its own module, imported only when it runs (or when --help lists them):
# `krait --version` and `krait ps` do not pay for QEMU, rich tables or the benchmarks.
COMMANDS = ("build", "lock", "run", "inspect", "kernel", "bench", "settings", "ps", "logs",
            "stop", "rm", "serve", "replace", "snapshot", "keygen", "volume", "init", "push",
            "pull", "export")


class LazyGroup(click.Group):
    """A group whose commands are the ``command`` of ``krait.cli.NAME``, imported when
    asked for (click's documented pattern for large command lines)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command: click.Command = importlib.import_module(f"krait.cli.{cmd_name}").command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="krait")
@click.option("--debug", is_flag=True, help="Show every command krait runs.")
def cli(debug: bool) -> None:
    """krait: turn a Python app into a unikernel and boot it."""
    # Nothing krait makes (cache entries, folders, images) is writable by other users,
    # whatever umask it was started with: see krait.paths.
    os.umask(os.umask(0o022) | 0o022)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
        handlers=[_RichWhenNeeded()])


class _RichWhenNeeded(logging.Handler):
    """rich's log handler, made for the first message: a command that logs nothing (most
    do) is not kept waiting for rich (`krait run` starts QEMU sooner)."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.logging import RichHandler

            from krait.cli._output import err_console

            self._rich = RichHandler(console=err_console, show_time=False, show_path=False,
                                     markup=False)
            self._rich.setFormatter(self.formatter)
        self._rich.handle(record)


def _message(text: str, limit: int = 4000) -> str:
    """An error's text, markup escaped, controls shown, and not endless."""
    from rich.markup import escape

    from krait.cli._output import visible

    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return escape(visible(text, newlines=True))


def main() -> None:
    try:
        cli(standalone_mode=False)
    except KraitError as e:
        # Messages are printed verbatim: "[tool.krait]" is text here, not rich markup,
        # and what they quote from an image or a file cannot drive the terminal.
        _say(f"[bold red]error:[/] {_message(e.message)}")
        if e.hint:
            _say(f"[yellow]hint:[/] {_message(e.hint)}")
        sys.exit(getattr(e, "exit_code", 1))
    except click.exceptions.Abort:
        _say("aborted")
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:  # a bug in krait: say so plainly; the traceback is for --debug
        logging.getLogger("krait").debug("internal error", exc_info=True)
        _say(f"[bold red]internal error:[/] {type(e).__name__}: {_message(str(e))}")
        _say("[yellow]hint:[/] rerun with --debug for the traceback, and report it")
        sys.exit(70)


def _say(markup: str) -> None:
    from krait.cli._output import err_console

    err_console.print(markup, highlight=False)
