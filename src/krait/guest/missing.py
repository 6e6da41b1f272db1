"""Naming a standard-library module the image lacks, when its absence hurts.

An image holds the app folder and every distribution the app uses whole, but only the
part of the standard library that the build's trace and scan saw used: a module the
app imports by a name built at run time can be missing. A last-resort import finder,
consulted after all others have failed, notes such a miss; the hint (what to put in
``modules``) is printed only if the ModuleNotFoundError is not handled by the app, when
it ends a request or the app (code probes for optional modules all the time, and
catches the error: that is no one's problem). Submodules that were looked for and not
found at build time either are left alone.
"""

from __future__ import annotations

import sys

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_missed: set[str] = set()
_told: set[str] = set()
_absent: frozenset[str] = frozenset()


class MissingModuleHint:
    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in sys.stdlib_module_names and name not in _absent:
            _missed.add(name)
        return None


def missed() -> set[str]:
    """The standard-library modules looked for so far that the image does not have."""
    return set(_missed)


def hint_for(error: BaseException | None) -> str | None:
    """The line to print for ``error`` (or what caused it), if a module the image lacks
    is why it happened."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "name", None)
        if isinstance(error, ModuleNotFoundError) and name in _missed:
            top = name.partition(".")[0]
            return (f"krait: module `{name}` is not in the image: the build did not see it "
                    f"used. Add it to [tool.krait] modules = [\"{name}\"] (or \"{top}.*\") "
                    "and rebuild.")
        error = error.__cause__ or error.__context__
    return None


def tell(error: BaseException | None) -> None:
    """Print the hint for an error the app did not handle (once per module)."""
    line = hint_for(error)
    if line and line not in _told:
        _told.add(line)
        print(line, file=sys.stderr, flush=True)


def install(absent: Any = ()) -> None:
    """``absent``: submodules that were not found at build time either (optional ones)."""
    global _absent
    _absent = frozenset(absent)
    sys.meta_path.append(MissingModuleHint)


def print_unhandled() -> None:
    """The traceback of the exception being handled (one the app did not handle), and
    the hint if a module the image lacks caused it."""
    import traceback

    traceback.print_exc()
    tell(sys.exc_info()[1])
    sys.stderr.flush()
