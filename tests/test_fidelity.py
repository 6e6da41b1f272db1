"""The fidelity benchmark's pieces that need no VM: the app folder it builds, how the
job's lines are read, and the report a reader gets."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from krait.bench import fidelity_job
from krait.bench.fidelity import DIFFERENCES, MODULES, Difference, Run, parse, plan, write_app
from krait.bench.fidelity_report import markdown, report


def line(item: dict[str, object]) -> str:
    return fidelity_job.MARK + json.dumps(item) + "\n"


def test_the_app_folder_runs_the_job_on_debians_interpreter(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "fidelity", ("test_os", "test_pwd"))
    settings = tomllib.loads((folder / "krait.toml").read_text())
    assert settings["entry"] == "fidelity_job:main" and settings["kind"] == "main"
    assert settings["python"] == "/usr/bin/python3.11"
    # The runner and the test modules are imported by name: declared for the closure.
    assert {"test.test_os", "test.test_pwd", "test.libregrtest.runtest"} <= set(
        settings["modules"])
    assert json.loads((folder / fidelity_job.PLAN).read_text())["modules"] == [
        "test_os", "test_pwd"]
    assert (folder / "fidelity_job.py").read_text() == Path(fidelity_job.__file__).read_text()


def test_plan_leaves_out_the_differences_by_name_where_they_are() -> None:
    made = plan(("test_os",))
    assert set(made) == {"modules", "ignore", "timeout"}
    for d in DIFFERENCES:
        assert d.pattern in made["ignore"][d.where][d.module]
        assert d.module in MODULES and d.reason
        # regrtest treats a dotted name without a wildcard as a whole test id
        assert d.pattern.startswith(f"test.{d.module}.") or "." not in d.pattern


def test_lines_cut_or_mixed_with_the_console_are_ignored() -> None:
    lines = ["booting\n", line({"module": "test_os", "problem": {"test": "t1", "kind": "error",
                                                               "error": "OSError"}}),
             fidelity_job.MARK + '{"module": "test_os", "sk\n',  # cut by other output
             line({"module": "test_os", "skip": ["t2", "no IPv6"]}),
             line({"module": "test_os", "result": "failed", "ran": 3}),
             line({"done": 1, "failed": 1, "seconds": 1.0})]
    results, done = parse(lines)
    assert done == {"done": 1, "failed": 1, "seconds": 1.0}
    assert results["test_os"]["problems"] == [{"test": "t1", "kind": "error",
                                               "error": "OSError"}]
    assert results["test_os"]["skipped"] == {"t2": "no IPv6"}


def test_the_report_puts_guest_beside_host_with_the_reason() -> None:
    guest = Run("guest", 60.0, 1, [
        line({"module": "test_os", "problem": {"test": "test_os.T.test_x", "kind": "failure",
                                               "error": "AssertionError: 1 != 2"}}),
        line({"module": "test_os", "skip": ["test_os.T.test_y", "no terminals"]}),
        line({"module": "test_os", "result": "failed", "ran": 5}),
        line({"module": "test_pwd", "result": "passed", "ran": 3}),
        "krait: module `x` is not in the image: ...\n"])
    host = Run("host", 10.0, 0, [line({"module": "test_os", "result": "passed", "ran": 5}),
                                 line({"module": "test_pwd", "result": "passed", "ran": 3}),
                                 line({"done": 2, "failed": 0, "seconds": 10.0})])
    differences = (Difference("test_pwd", "*login*", "no login"),)
    doc = report(guest, host, ("test_os", "test_pwd"), differences,
                 {"date": "today", "krait": "0", "python": "/usr/bin/python3.11",
                  "accelerator": "tcg", "machine": {"cpu": "EPYC", "cores": 2},
                  "guest_memory": "768M", "guest_vcpus": 2})
    assert doc["summary"] == {"guest": {"passed": 1, "skipped": 0, "failed": 1},
                              "host": {"passed": 2, "skipped": 0, "failed": 0}}
    os_row, pwd_row = doc["modules"]
    assert "test_x: AssertionError: 1 != 2" in os_row["reason"]
    assert os_row["skipped_in_guest_only"] == {"test_os.T.test_y": "no terminals"}
    assert pwd_row["reason"] == "1 left out in the guest by name: no login"
    assert not doc["guest"]["finished"] and doc["host"]["finished"]
    assert len(doc["guest"]["missing_module_hints"]) == 1
    table = markdown(doc)
    assert "**TCG**" in table and "did not finish" in table
    assert ("| test_pwd | passed (3 ran) | passed (3 ran) | 1 left out in the guest by name: "
            "no login |") in table
