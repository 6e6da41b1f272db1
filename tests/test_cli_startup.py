"""`krait --version` (and the start of every command) pays only for click: each command's
module, and what it imports, is loaded when that command runs."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("rich", "krait.vmm", "krait.fleet", "krait.bench", "krait.image", "asyncio",
         "psutil", "cryptography", "qemu")


def loaded_after(*args: str) -> set[str]:
    code = ("import sys\nfrom krait.cli import main\nsys.argv = ['krait', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(' '.join(m for m in sys.modules if m.startswith({HEAVY!r})),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(out.stderr.split())


def test_version_loads_nothing_heavy() -> None:
    assert loaded_after("--version") == set()


def test_a_command_loads_what_it_needs_and_not_the_others() -> None:
    loaded = loaded_after("settings")
    assert "rich" in loaded  # it prints a table
    assert not {m for m in loaded if m.startswith(("krait.bench", "krait.fleet", "qemu"))}
