"""A last-resort import finder: name the module the image lacks, and how to add it.

Tracing sees only what the app imported at build time. When the guest later imports a
submodule of a package that *is* in the image (``numpy.random``, imported lazily by
``numpy.__getattr__``), this finder, consulted after all others have failed, prints
one line saying what to put in ``modules`` before the usual ModuleNotFoundError.
Top-level names that are absent altogether are left alone, and so are the submodules
that were looked for and not found at build time too: code probes for optional
modules all the time.
"""

from __future__ import annotations

import sys

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_told: set[str] = set()
_absent: frozenset[str] = frozenset()


class MissingModuleHint:
    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> None:
        top, dot, _ = name.partition(".")
        if dot and top in sys.modules and name not in _told and name not in _absent:
            _told.add(name)
            print(f"krait: module `{name}` is not in the image: the build-time trace did not "
                  f"see it imported. Add it to [tool.krait] modules = [\"{name}\"] (or "
                  f"\"{top}.*\") and rebuild.", file=sys.stderr, flush=True)
        return None


def install(absent: Any = ()) -> None:
    """``absent``: submodules that were not found at build time either (optional ones)."""
    global _absent
    _absent = frozenset(absent)
    sys.meta_path.append(MissingModuleHint)
