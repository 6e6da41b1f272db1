"""`krait bench compare`'s outputs (JSON, markdown, PNG) from a fake result."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from krait.bench.compare import VariantResult, build_document, markdown, page, write_outputs
from krait.bench.compare.report import ratios, summary

NOW = datetime.datetime(2026, 11, 28, 8, 0, tzinfo=datetime.UTC)
SURFACE = {"files": 9800, "executables": 742, "setuid": 11, "shells": 5, "packages": 133,
           "listening_ports": 1}


def fake_results() -> list[VariantResult]:
    # Deliberately out of order: the document sorts them.
    return [
        VariantResult("unikernel", "krait unikernel", artifact_bytes=6_348_800,
                      boot_s=[3.0, 2.9, 3.2], host_pss_mb=[168.0, 170.0, 169.0],
                      guest_used_mb=[30.0, 30.0, 31.0], requests_per_s=1000.0,
                      surface={"files": 134, "executables": 4, "setuid": 0, "shells": 0,
                               "packages": 0, "listening_ports": 1}),
        VariantResult("process", "process (host Python)", artifact_bytes=14_639,
                      boot_s=[0.09, 0.08, 0.1], host_pss_mb=[20.6] * 3,
                      guest_used_mb=[20.6] * 3, requests_per_s=19000.0, surface=dict(SURFACE)),
        VariantResult("gp-vm", "general-purpose VM (Debian, systemd)",
                      artifact_bytes=423_403_520, boot_s=[31.0, 30.0, 33.0],
                      host_pss_mb=[364.0] * 3, guest_used_mb=[57.0, 60.0, 58.0],
                      requests_per_s=450.0, surface=dict(SURFACE)),
        VariantResult("container", "container (crun, Debian slim)",
                      skipped="`crun` is not installed (apt-get install crun)"),
    ]


def doc(results: list[VariantResult] | None = None, app: str = "examples/hello") -> dict:
    return build_document(results or fake_results(), app, "tcg", "TCG: no KVM here",
                          {"runs": 3, "memory_mib": 256, "wrk_seconds": 5,
                           "wrk_connections": 4}, {"qemu": "QEMU emulator version 7.2"},
                          now=NOW)


def test_document_orders_variants_and_summarizes() -> None:
    d = doc()
    assert [v["name"] for v in d["variants"]] == ["process", "container", "gp-vm", "unikernel"]
    gp = d["variants"][2]
    assert gp["boot_s"] == {"samples": [31.0, 30.0, 33.0], "min": 30.0, "median": 31.0,
                            "max": 33.0}
    assert d["accelerator"] == "tcg" and d["versions"]["qemu"].startswith("QEMU")
    assert d["machine"]["cores"]
    skipped = d["variants"][1]
    assert skipped["skipped"].startswith("`crun` is not installed")
    assert skipped["boot_s"] == {"samples": []}  # no number where nothing was measured


def test_ratios_and_targets() -> None:
    d = doc()
    assert d["ratios"]["gp-vm/unikernel boot_s"] == pytest.approx(31.0 / 3.0, abs=0.01)
    assert d["ratios"]["gp-vm/unikernel guest_used_mb"] == pytest.approx(58.0 / 30.0, abs=0.01)
    assert d["ratios"]["unikernel/gp-vm requests_per_s"] == pytest.approx(1000 / 450, abs=0.01)
    assert d["targets"] == {"unikernel first response >= 10x sooner than gp-vm": True,
                            "unikernel uses less guest memory than gp-vm": True,
                            "unikernel requests/s >= gp-vm's": True}
    slower = fake_results()
    slower[0].requests_per_s = 400.0
    assert doc(slower)["targets"]["unikernel requests/s >= gp-vm's"] is False


def test_ratios_are_none_when_a_side_is_missing() -> None:
    variants = [{"name": "gp-vm", "boot_s": {"median": 30.0}}]
    assert set(ratios(variants).values()) == {None}


def test_a_failed_variant_is_marked_not_measured() -> None:
    results = fake_results()
    results[0] = VariantResult("unikernel", "krait unikernel", error="did not answer in time")
    d = build_document(results, "x", "tcg", "", {"runs": 3, "memory_mib": 256,
                                                 "wrk_seconds": 5, "wrk_connections": 4}, {})
    text = markdown(d)
    assert "| launch to first HTTP 200 |" in text and "| failed |" in text
    assert "krait unikernel: failed — did not answer in time" in text
    assert d["ratios"]["gp-vm/unikernel boot_s"] is None
    assert d["targets"]["unikernel first response >= 10x sooner than gp-vm"] is None


def test_markdown_table() -> None:
    text = markdown(doc())
    lines = text.splitlines()
    assert lines[0].count("|") == 6  # a title column and four variants
    assert "**31.00 s** (30.00-33.00, 3 runs)" in text
    assert "| setuid/setgid files | 11 | skipped | 11 | 0 |" in text
    assert "| artifact size on disk | 14.6 KB | skipped | 423.4 MB | 6.3 MB |" in text
    assert "accelerator **TCG**" in text and "2026-11-28" in text
    assert "container (crun, Debian slim): skipped — `crun` is not installed" in text
    assert "gp-vm/unikernel boot_s: **10.33x**" in text


def two_apps() -> list[dict]:
    slow = fake_results()
    slow[0].boot_s, slow[0].requests_per_s = [4.0, 4.0, 4.0], 300.0
    return [doc(), doc(slow, app="examples/flask")]


def test_summary_puts_the_apps_side_by_side_with_their_targets() -> None:
    lines = summary(two_apps()).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| app |")
    assert lines[2] == ("| hello | 3.00 s | 31.00 s | **10.33x** (met) | 1000 | 450 | "
                        "**2.22x** (met) |")
    assert lines[3] == ("| flask | 4.00 s | 31.00 s | **7.75x** (not met) | 300 | 450 | "
                        "**0.67x** (not met) |")


def test_page_holds_every_apps_table() -> None:
    text = page(two_apps())
    assert text.startswith("# krait bench compare: hello, flask")
    assert "## hello (examples/hello)" in text and "## flask (examples/flask)" in text
    assert text.count("| launch to first HTTP 200 |") == 2


def test_write_outputs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    docs = two_apps()
    paths = write_outputs(docs, tmp_path / "bench")
    assert paths["json"] == [tmp_path / "bench" / "compare-hello.json",
                             tmp_path / "bench" / "compare-flask.json"]
    assert json.loads(paths["json"][1].read_text())["app"] == "examples/flask"
    assert json.loads(paths["json"][0].read_text())["variants"][3]["name"] == "unikernel"
    assert paths["md"] == tmp_path / "bench" / "compare-hello-flask.md"
    assert paths["md"].read_text() == page(docs) and markdown(docs[0]) in page(docs)
    assert paths["png"] == tmp_path / "bench" / "compare-hello-flask.png"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


