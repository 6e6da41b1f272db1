"""The names krait turns into file names: instances, serves and images.

One pattern and one check, applied where a name comes in (a flag, a manifest, a record)
and again at every lookup, so a name is never a path: no '/', no '..', not hidden, not
empty, at most 63 characters (a host name's label; it also keeps socket paths short).
"""

from __future__ import annotations

import re

from krait.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
RULE = "letters, digits, '.', '_' and '-' (up to 63), starting with a letter or digit"


def valid_name(name: object) -> bool:
    """Is ``name`` a name krait may make a file of?"""
    return isinstance(name, str) and NAME.fullmatch(name) is not None and ".." not in name


def check_name(name: str, what: str = "instance") -> str:
    """``name`` if it is a valid name; a ConfigError saying what a name may be if not."""
    if not valid_name(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ConfigError(f"{shown!r} is not a valid {what} name", hint=f"use {RULE}")
    return name


def name_from(text: str) -> str:
    """A valid name made from any text (an image name, say): 'My App!' -> 'my-app'."""
    name = re.sub(r"[^a-z0-9_.-]", "-", text.lower())
    return re.sub(r"\.{2,}", ".", name).strip("-._")[:50] or "krait"
