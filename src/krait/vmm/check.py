"""Proving at build time that an image serves: run it once, ask it the app's questions.

`krait build` starts the image it just wrote as a process (the process target: the
image's own interpreter, layers and standard library, no boot), waits until it is ready
(a ``main`` app until it listens on its ports), sends the ``check`` requests and stops
it. An answer of 500 or more, a refused or timed-out request, or an app that does not
start fails the build, with the app's own output. What the app looked for in the
standard library and the image lacks (a module imported by a name built at run time,
which neither the trace nor the scan could see) is recorded by each of its processes;
when that is why a check failed, the image is built once more with those modules and
checked again, so the user never has to name them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from krait.config import AppConfig
from krait.errors import BuildError, KraitError
from krait.image.archive import open_image
from krait.image.build import BuildResult, build_image, image_path
from krait.image.check_requests import ask, requests_for
from krait.image.lock import LockMode
from krait.kernel import Kernel
from krait.vmm.backends import check_known
from krait.vmm.booted import booted
from krait.vmm.process import ProcessBackend

Step = Callable[[str], None]
READY_TIMEOUT = 60.0


@dataclass
class CheckReport:
    """What the check asked and heard; ``failures`` empty means the image serves."""

    answers: list[tuple[str, int]] = field(default_factory=list)  # request, status
    failures: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # standard-library modules it lacks
    console: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None  # why there was no check

    def summary(self) -> str:
        if self.skipped:
            return f"not checked: {self.skipped}"
        asked = ", ".join(f"{r} → {s}" for r, s in self.answers) or "started and listened"
        return f"checked as a process in {self.seconds:.1f}s: {asked}"


def check_image(path: Path) -> CheckReport:
    """Run the image at ``path`` as a process and send it its check requests."""
    image = open_image(path)
    requests = requests_for(image)
    report = CheckReport()
    if requests is None:
        report.skipped = "the app declares no check requests (`check`)"
        return report
    if image.manifest.settings.get("volumes"):
        report.skipped = "the app expects volumes, which only a VM has"
        return report
    main = image.manifest.settings.get("kind") == "main"
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="krait-check-"))
    try:
        backend = ProcessBackend(report=scratch / "report")
        # A main app listens where it says itself; krait's server where we ask it.
        host_ports = {p: p for p in image.manifest.ports} if main else None
        try:
            with booted(image, backend=backend, host_ports=host_ports,
                        ready_timeout=READY_TIMEOUT) as vm:
                report.console = vm.lines
                for request in requests:
                    try:
                        status = ask("127.0.0.1", vm.port, request)
                    except (OSError, http.client.HTTPException) as e:
                        report.failures.append(f"{request}: no answer ({e})")
                        continue
                    report.answers.append((request, status))
                    if status >= 500:
                        report.failures.append(f"{request}: answered {status}")
        except KraitError as e:
            report.failures.append(e.message)
        report.missed = sorted({name for each in scratch.glob("report.*.json")
                                for name in _read_missed(each)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _read_missed(path: Path) -> list[str]:
    with contextlib.suppress(OSError, ValueError, TypeError):
        missed = json.loads(path.read_text())["missed"]
        return [m for m in missed if isinstance(m, str) and m.replace(".", "_").isidentifier()]
    return []


def build_checked(app: AppConfig, kernel: Kernel, output: Path | None = None,
                  step: Step = lambda _: None, check: bool = True,
                  lock_mode: LockMode = LockMode.AUTO,
                  signing_key: Ed25519PrivateKey | None = None) -> BuildResult:
    """``build_image``, then the check; once more with the standard-library modules the
    check found missing, if that is why it failed. The image takes its place only once
    it passed (an earlier image there is kept otherwise); a failed check is a BuildError
    that says what was asked and what the app printed."""
    final = image_path(app, output)
    if app.backend is not None:
        check_known(app.backend)  # the image's default backend must be one that exists
    if not check:
        result = build_image(app, kernel, final, step, lock_mode, signing_key)
        result.notes.append("not checked (--no-check)")
        return result
    trial = final.with_name(f".{final.name}.unchecked")
    try:
        result = build_image(app, kernel, trial, step, lock_mode, signing_key)
        step("checking that the image serves (as a process)")
        report = check_image(trial)
        new = [m for m in report.missed if m not in app.modules]
        if report.failures and new:
            step(f"the check needed {', '.join(new)}, which the trace did not see: adding")
            app = replace(app, modules=(*app.modules, *new))
            result = build_image(app, kernel, trial, step, lock_mode, signing_key)
            report = check_image(trial)
            result.notes.append(f"added {', '.join(new)} to the image: the check needed them")
        if report.failures:
            tail = "\n".join(report.console[-25:])
            raise BuildError("the image does not serve: " + "; ".join(report.failures)
                             + (f"\n--- the app's output ---\n{tail}" if tail else ""),
                             hint="fix what the app's output shows; the requests come from "
                             "`check` in [tool.krait] (default: GET /); `krait build "
                             "--no-check` skips the check")
        trial.replace(final)
    finally:
        trial.unlink(missing_ok=True)
    result.path = final
    result.notes.append(report.summary())
    return result
