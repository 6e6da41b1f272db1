"""Shared printing helpers for the commands.

Text that comes from an image, a record, a registry or a file name is data, not markup:
rich would read "[/]" in a file name as a closing tag (and fail), drop "[id]", and pass
ESC sequences to the terminal. Such text goes through :func:`visible` and is printed as
:class:`rich.text.Text`, or escaped where it sits in a line with markup.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# C0 and C1 controls, DEL, and the marks that reorder how a line reads (bidi overrides).
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069]")


def visible(value: object, newlines: bool = False) -> str:
    """``value`` as text that shows every character it holds: control characters written
    as Python escapes (``\\x1b``), newlines too unless ``newlines``."""
    text = str(value)
    if not newlines:
        text = text.replace("\n", "\\n")
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def text(value: object, style: str = "") -> Text:
    """Untrusted ``value`` for a table cell or a line: no markup, controls shown."""
    return Text(visible(value), style=style)


def markup_safe(value: object) -> str:
    """Untrusted ``value`` inside a line that has markup of krait's own."""
    return escape(visible(value))


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"
