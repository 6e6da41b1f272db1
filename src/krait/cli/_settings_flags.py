"""Click options generated from the settings table (krait.config.settings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from krait.config import SETTINGS
from krait.config.settings import Stage


def setting_options(stage: Stage, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Decorate a command with one flag per setting of ``stage``."""

    def decorate(fn: Any) -> Any:
        for s in reversed(SETTINGS):
            if s.stage != stage or s.key in skip:
                continue
            if s.parse.__name__ == "_bool":
                opt = click.option(f"{s.flag}/--no-{s.key}", s.field, default=None, help=s.help)
            else:
                opt = click.option(s.flag, s.field, metavar=s.metavar, multiple=s.repeatable,
                                   default=None, help=s.help)
            fn = opt(fn)
        return fn

    return decorate


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Flags the user actually gave (click gives () for unused repeatable flags)."""
    return {k: v for k, v in values.items() if v is not None and v != ()}
