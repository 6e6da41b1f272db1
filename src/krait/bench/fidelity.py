"""``make fidelity``: how much of Linux a Python app finds in krait's guest, measured with
CPython's own regression tests for the modules that face the operating system.

One image whose job (:mod:`krait.bench.fidelity_job`) runs ``test.libregrtest`` on each
module of :data:`MODULES` in turn, booted once; the same job on the host, with the same
interpreter, for comparison. What the guest lacks by design (no shell, no login, a
read-only root, no network but what the image declares) is left out of the guest's run
by name, each with its reason (:data:`DIFFERENCES`, listed in the README); everything
else must pass. The result: ``fidelity.json`` and a table, ``fidelity.md``.

Not a test: it takes minutes under emulation (``make fidelity``, not ``make test``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krait import __version__
from krait.bench import fidelity_job
from krait.bench.result import machine_info
from krait.run import spawn

# The modules of the issue that asked for this (#24), and the look-ups and terminals an
# ordinary library reaches for (pwd, grp, getpass, pty).
MODULES = (
    "test_os", "test_posix", "test_signal", "test_select", "test_selectors", "test_fcntl",
    "test_mmap", "test_tempfile", "test_shutil", "test_threading", "test_subprocess",
    "test_multiprocessing_fork", "test_multiprocessing_spawn", "test_socket", "test_time",
    "test_resource", "test_pathlib", "test_logging", "test_zoneinfo", "test_pwd", "test_grp",
    "test_getpass", "test_pty",
)


@dataclass(frozen=True)
class Difference:
    """Tests of ``module`` left out of the guest's run (``pattern``, as regrtest's
    ``--ignore`` takes it), and why: what the guest does not have on purpose."""

    module: str
    pattern: str
    reason: str
    where: str = "guest"  # or "host": what this machine lacks, not what the guest does


# The reasons, as the README's "What differs from a Linux host" lists them.
NO_SHELL = ("no shell: the interpreter is the image's only executable (no /bin/sh, no "
            "cat); shell=True, os.system and os.popen fail with FileNotFoundError")
NOEXEC = ("what the app writes is never executable: /tmp and /dev/shm are mounted noexec "
          "(a file written there cannot be run, found by shutil.which or mapped PROT_EXEC)")
CONFINED = ("root without root's powers: the app runs as uid 0 with every capability "
            "but three dropped (no chown to another user, no setgroups)")
NO_RAW = ("no raw sockets: the seccomp filter refuses SOCK_RAW, netlink's too, so "
          "socket.if_nameindex() (and getifaddrs) fail with EPERM")
BYTECODE = ("bytecode only: no .py beside the .pyc, so tracebacks name files and lines "
            "but show no source lines, and a glob for *.py finds nothing (`sources = true` "
            "ships the sources)")
HOST_VSOCK = ("this host (itself a VM) has /dev/vsock but nothing answers on it: the "
              "vsock tests wait in accept() until the watchdog; the guest has no vsock")


def _tests(module: str, reason: str, *names: str, where: str = "guest",
           ) -> tuple[Difference, ...]:
    return tuple(Difference(module, f"test.{module}.{n}", reason, where) for n in names)


DIFFERENCES: tuple[Difference, ...] = (
    *_tests("test_os", CONFINED, "ChownFileTests.test_chown_with_root"),
    *_tests("test_posix", CONFINED, "PosixGroupsTester.test_initgroups",
            "PosixGroupsTester.test_setgroups", "PosixTester.test_chown",
            "PosixTester.test_fchown", "PosixTester.test_lchown"),
    *_tests("test_posix", NO_SHELL, "PosixTester.test_getgroups"),
    *_tests("test_mmap", NOEXEC, "MmapTests.test_access_parameter"),
    *_tests("test_shutil", NOEXEC, "TestWhich.*", "TestWhichBytes.*"),
    *_tests("test_threading", BYTECODE, "ExceptHookTests.test_excepthook",
            "ExceptHookTests.test_excepthook_thread_None"),
    *(d for m in ("test_multiprocessing_fork", "test_multiprocessing_spawn")
      for d in _tests(m, BYTECODE, "_TestImportStar.test_import",
                      "WithProcessesTestPool.test_traceback",
                      "WithProcessesTestSubclassingProcess.test_stderr_flush")),
    *_tests("test_subprocess", NO_SHELL, "MiscTests.test_getoutput",
            "POSIXProcessTestCase.test_bytes_program", "POSIXProcessTestCase.test_shell_*",
            "POSIXProcessTestCase.test_restore_signals",
            "RunFuncTestCase.test_run_with_shell_timeout_and_capture_output",
            "RunFuncTestCase.test_encoding_warning"),
    *_tests("test_logging", BYTECODE, "ExceptionTest.test_formatting"),
    *_tests("test_socket", NO_RAW, "GeneralModuleTests.testInterfaceNameIndex"),
    *_tests("test_subprocess", NOEXEC, "POSIXProcessTestCase.test_args_string",
            "POSIXProcessTestCase.test_call_string"),
    *_tests("test_socket", HOST_VSOCK, "ThreadedVSOCKSocketStreamTest.*", where="host"),
)

# A module's limit (regrtest's own watchdog, for the whole module); the job adds a grace
# period. test_multiprocessing_spawn took 573 s in the guest under TCG here (107 s on
# the host): each of its children is an interpreter started under emulation.
TIMEOUT = 900
# Debian's interpreter: its libpython3.11-testsuite holds the tests (another build's
# test package, pyenv's say, is not the same suite).
PYTHON = "/usr/bin/python3.11"
GUEST_MEMORY = "768M"
GUEST_VCPUS = 2


def plan(modules: tuple[str, ...]) -> dict[str, Any]:
    """What the job runs: the modules, the tests left out of each, the time limit."""
    ignore: dict[str, dict[str, list[str]]] = {"guest": {}, "host": {}}
    for d in DIFFERENCES:
        ignore[d.where].setdefault(d.module, []).append(d.pattern)
    return {"modules": list(modules), "ignore": ignore, "timeout": TIMEOUT}


def write_app(folder: Path, modules: tuple[str, ...] = MODULES) -> Path:
    """The fidelity image's app folder: the job, its plan, its settings."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fidelity_job.__file__, folder / "fidelity_job.py")
    (folder / fidelity_job.PLAN).write_text(json.dumps(plan(modules), indent=1) + "\n")
    # The suite's runner and the test modules are imported by name at run time.
    # test_zoneinfo also tests the pure-Python fallback, which krait leaves out of an
    # image whose C accelerator (_zoneinfo) is there: named, as an app would name it.
    imported = ["test.libregrtest.cmdline", "test.libregrtest.runtest",
                "test.libregrtest.setup", *(f"test.{m}" for m in modules),
                *(["zoneinfo._zoneinfo"] if "test_zoneinfo" in modules else [])]
    (folder / "krait.toml").write_text(
        'name = "fidelity"\nentry = "fidelity_job:main"\nkind = "main"\n'
        f'python = "{PYTHON}"\n'
        f'memory = "{GUEST_MEMORY}"\nvcpus = {GUEST_VCPUS}\n'
        f"modules = {json.dumps(imported)}\n")
    return folder


def parse(lines: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The job's result per module (its problems and skipped tests gathered from their
    own lines), and its closing line (None if it never got there)."""
    results: dict[str, dict[str, Any]] = {}
    pending: dict[str, dict[str, Any]] = {}
    done = None
    for line in lines:
        item = _item(line)
        if item is None:
            continue
        if "done" in item:
            done = item
            continue
        got = pending.setdefault(item["module"], {"problems": [], "skipped": {}})
        if "problem" in item:
            got["problems"].append(item["problem"])
        elif "skip" in item:
            got["skipped"][item["skip"][0]] = item["skip"][1]
        else:
            results[item["module"]] = {**item, **pending.pop(item["module"])}
    return results, done


def _item(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith(fidelity_job.MARK):
        return None
    try:
        item: dict[str, Any] = json.loads(text[len(fidelity_job.MARK):])
    except ValueError:
        return None  # a line cut by other output on the console
    return item


@dataclass
class Run:
    where: str  # "guest" or "host"
    seconds: float
    status: int
    lines: list[str]

    def to_json(self) -> dict[str, Any]:
        results, done = parse(self.lines)
        return {"seconds": round(self.seconds, 1), "exit_status": self.status,
                "finished": done is not None, "modules": results}


def _run(where: str, argv: list[str], log: Path, cwd: Path | None = None,
         limit: float = 3600) -> Run:
    """Run ``argv`` to its end (stopped after ``limit`` seconds: status -1), its output
    to ``log``; show each module's result as it comes."""
    lines: list[str] = []
    started = time.monotonic()
    status = -1
    with spawn(argv, cwd=cwd, grace=60) as proc, log.open("w") as out:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            out.write(line)
            lines.append(line)
            item = _item(line)
            if item is not None and ("summary" in item or "done" in item):
                print(f"{where}: {item.get('summary', item)} ({item.get('seconds')} s)",
                      file=sys.stderr, flush=True)
            if time.monotonic() - started > limit:
                print(f"{where}: over {limit:.0f} s, stopping it", file=sys.stderr)
                break
        else:
            status = proc.wait()
    return Run(where, time.monotonic() - started, status, lines)


def run_guest(image: Path, log: Path) -> Run:
    return _run("guest", [sys.executable, "-m", "krait.cli", "run", str(image)], log)


def run_host(python: str, folder: Path, log: Path) -> Run:
    code = "import sys, fidelity_job; sys.exit(fidelity_job.main('host'))"
    return _run("host", [python, "-c", code], log, cwd=folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m krait.bench.fidelity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench"),
                        help="where fidelity.json and fidelity.md go")
    parser.add_argument("--no-host", action="store_true", help="the guest only")
    parser.add_argument("--modules", help="a comma-separated subset of the modules")
    args = parser.parse_args(argv)
    # A stop is an exit, so that the runs' `with` blocks end the VM or the job they own
    # (Python's default for SIGTERM ends the process at once and leaves them running).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from krait.bench.fidelity_report import markdown, report
    from krait.config import load_app
    from krait.image.archive import open_image
    from krait.image.build import build_image
    from krait.kernel import build_kernel
    from krait.vmm.accel import detect_accel

    modules = tuple(args.modules.split(",")) if args.modules else MODULES
    work = Path(tempfile.mkdtemp(prefix="krait-fidelity-"))
    folder = write_app(work / "fidelity", modules)
    print(f"building the fidelity image in {folder}", file=sys.stderr)
    built = build_image(load_app(folder), build_kernel())
    python = open_image(built.path).manifest.interpreter["path"]
    guest = run_guest(built.path, work / "guest.log")
    host = None if args.no_host else run_host(python, folder, work / "host.log")
    doc = report(guest, host, modules, DIFFERENCES, {
        "benchmark": "fidelity", "accelerator": detect_accel().name,
        "machine": machine_info(), "krait": __version__, "python": python,
        "guest_memory": GUEST_MEMORY, "guest_vcpus": GUEST_VCPUS, "timeout_s": TIMEOUT,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "fidelity.md").write_text(markdown(doc))
    print(f"wrote {args.out / 'fidelity.json'} and fidelity.md; logs in {work}",
          file=sys.stderr)
    return 0 if doc["summary"]["guest"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
