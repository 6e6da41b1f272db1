"""krait's exceptions.

Everything krait raises on purpose derives from :class:`KraitError`, which carries
a message (what went wrong) and a hint (what to do). The CLI prints both and exits
non-zero; nothing else in krait prints errors.

    KraitError
    ├── ConfigError        the app's [tool.krait] table or a flag is wrong
    ├── BuildError         the app cannot be turned into an image
    │   └── TraceError     importing the app at build time failed
    ├── KernelError        the kernel could not be built or found
    ├── ImageError         a .krait file is missing, corrupted or tampered with
    ├── VmError            a VM could not be started, or died
    │   └── GuestFailed    the guest booted but the app (or the kernel) failed
    └── CommandError       a command krait ran exited non-zero
"""

from __future__ import annotations


class KraitError(Exception):
    """An error with a message for the user and, where we know one, a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(KraitError):
    pass


class BuildError(KraitError):
    pass


class TraceError(BuildError):
    pass


class KernelError(KraitError):
    pass


class ImageError(KraitError):
    pass


class VmError(KraitError):
    pass


class GuestFailed(VmError):
    """The guest ran but did not end well; ``exit_status`` is the app's, if known."""

    def __init__(self, message: str, hint: str | None = None, exit_status: int | None = None):
        super().__init__(message, hint)
        self.exit_status = exit_status


class CommandError(KraitError):
    def __init__(self, argv: list[str], returncode: int, output: str = "") -> None:
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(
            f"`{argv[0]}` exited with status {returncode}" + (f":\n{tail}" if tail else "")
        )
        self.argv = argv
        self.returncode = returncode
        self.output = output
