"""The job of krait's fidelity image (see :mod:`krait.bench.fidelity`), copied into its app
folder as it is: standard library only, the same in the guest and on the host.

CPython's own regression tests, one module at a time, each in a child interpreter of its
own run through the suite's own runner (``test.libregrtest``): a module that hangs is
ended by the runner's watchdog (faulthandler, which ends the child with ``os._exit``),
and by this job after a grace period; a module that crashes ends alone. For each module
line ``krait-fidelity {json}`` on stdout for each test that failed (with the last line of
its traceback) and each that was skipped (with why), then one with the module's result
and how many of its tests ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

MARK = "krait-fidelity "
# Beside this file: {"modules": [...], "ignore": {"guest"|"host": {module: [pattern...]}}}
PLAN = "fidelity.json"
GRACE = 60  # seconds after the runner's own watchdog before the job ends a module itself


def main(where: str = "guest") -> int:
    """Run every module of the plan, leaving out what it leaves out ``where`` the job
    runs ("guest" or "host"); 0 if none failed."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, PLAN)) as f:
        plan = json.load(f)
    bad = 0
    started = time.monotonic()
    for module in plan["modules"]:
        result = _run_module(module, plan["ignore"][where].get(module, []), plan["timeout"], here)
        _say(result)
        bad += result["result"] not in ("passed", "skipped")
    _say({"done": len(plan["modules"]), "failed": bad,
          "seconds": round(time.monotonic() - started, 1)})
    return 1 if bad else 0


def _say(result: dict[str, Any]) -> None:
    """One short line per item: the console keeps lines of up to 4 KiB, and a module can
    skip hundreds of tests."""
    items = [*({"module": result["module"], "problem": p} for p in result.pop("problems", ())),
             *({"module": result["module"], "skip": [t, r[:200]]}
               for t, r in result.pop("skipped", {}).items())] if "module" in result else []
    for item in [*items, result]:  # the module's own line last: it closes the module
        print(MARK + json.dumps(item), flush=True)


def _run_module(module: str, ignore: list[str], timeout: int, here: str) -> dict[str, Any]:
    out = os.path.join(tempfile.mkdtemp(prefix="fidelity-"), "result.json")
    argv = [sys.executable, "-X", "faulthandler", "-c",
            "import fidelity_job; fidelity_job.run_one()", module, out, str(timeout), *ignore]
    started = time.monotonic()
    # A session of its own: whatever the module leaves running is ended with it.
    child = subprocess.Popen(argv, cwd=here, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        status: int | None = child.wait(timeout + GRACE)
    except subprocess.TimeoutExpired:
        status = None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    if status is None:
        status = child.wait()
    seconds = round(time.monotonic() - started, 1)
    try:
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        what = ("timed out" if status == -signal.SIGKILL and seconds >= timeout
                else f"crashed (exit status {status})")
        result = {"result": "failed", "summary": f"{module} {what}", "problems": []}
    result.update(module=module, seconds=seconds, ignored=ignore)
    return result


# What the runner's result classes mean here.
_RESULTS = {"Passed": "passed", "Skipped": "skipped", "ResourceDenied": "skipped",
            "EnvChanged": "env changed", "DidNotRun": "did not run"}


def run_one() -> None:
    """In the child: ``argv`` is MODULE RESULT-FILE TIMEOUT [PATTERN...]: run MODULE with
    the tests matching each PATTERN left out, write what happened to RESULT-FILE."""
    import unittest

    from test import support
    from test.libregrtest.cmdline import _parse_args
    from test.libregrtest.runtest import runtest
    from test.libregrtest.setup import setup_tests
    from test.support import os_helper

    module, out, timeout, *ignore = sys.argv[1:]
    ns = _parse_args(["--timeout", timeout, *(a for p in ignore for a in ("--ignore", p))])
    ran: list[str] = []
    skipped: dict[str, str] = {}
    start_test, add_skip = unittest.TestResult.startTest, unittest.TestResult.addSkip

    def count(self: unittest.TestResult, test: unittest.TestCase) -> None:
        ran.append(test.id())
        started[0] = time.monotonic()
        start_test(self, test)

    started = [time.monotonic()]
    _stop_stuck_tests(started)

    def skip(self: unittest.TestResult, test: unittest.TestCase, reason: str) -> None:
        skipped[test.id()] = reason
        add_skip(self, test, reason)

    unittest.TestResult.startTest = count  # type: ignore[method-assign]
    unittest.TestResult.addSkip = skip  # type: ignore[method-assign]
    os.umask(0o022)
    with os_helper.temp_cwd(os.path.join(tempfile.mkdtemp(prefix="fidelity-"), "cwd"),
                            quiet=True) as cwd:
        ns.tempdir = cwd
        support.PGO = False
        setup_tests(ns)
        result = runtest(ns, module)
    kind = type(result).__name__
    found = [(label, test, tb) for label, each in (("error", getattr(result, "errors", None)),
                                                   ("failure", getattr(result, "failures", None)))
             for test, tb in each or ()]
    for label, test, tb in found:  # the runner, not verbose, shows only the first
        print(f"{label.upper()}: {test}\n{tb}", file=sys.stderr, flush=True)
    problems = [{"test": test, "kind": label, "error": _last_line(tb)}
                for label, test, tb in found]
    with open(out, "w") as f:
        json.dump({"result": _RESULTS.get(kind, "failed"), "summary": str(result),
                   "problems": problems, "ran": len(ran), "skipped": skipped}, f)


# One test waiting longer than this (a server in accept() whose client never came) is
# interrupted, so that the module's other tests still run; the runner's watchdog stays
# the last resort for the whole module.
TEST_LIMIT = 180.0
# A real-time signal: the tests send and catch SIGALRM, SIGUSR1 and SIGUSR2 themselves.
_STUCK = signal.SIGRTMIN + 7


class StuckTest(Exception):
    """Raised in the main thread when one test ran over :data:`TEST_LIMIT`."""


def _stop_stuck_tests(started: list[float]) -> None:
    """Interrupt the main thread (a blocking call there fails with :class:`StuckTest`)
    once per test that runs over :data:`TEST_LIMIT`; ``started[0]`` is when the test
    running now started."""
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise StuckTest(f"the test ran over {TEST_LIMIT:.0f} s; interrupted")

    signal.signal(_STUCK, interrupt)
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        told = None
        while True:
            time.sleep(5)
            if started[0] != told and time.monotonic() - started[0] > TEST_LIMIT:
                told = started[0]
                signal.pthread_kill(main, _STUCK)

    threading.Thread(target=watch, name="krait-fidelity-watch", daemon=True).start()


def _last_line(traceback: str) -> str:
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""
