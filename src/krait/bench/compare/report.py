"""The comparison's outputs: one JSON document per app; a markdown page and a PNG chart
with every app of one run side by side."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

from krait import __version__
from krait.bench.compare._common import VariantResult
from krait.bench.result import machine_info, summarize

ORDER = ("process", "container", "gp-vm", "unikernel")
NOTES = (
    "artifact: the app and server files for the process (the host's Python is shared), the "
    "root folder for the container, the ext4 disk (allocated bytes) for the VM, the .krait "
    "file for the unikernel",
    "memory seen from inside: the process's RSS, the container's memory cgroup charge, "
    "MemTotal - MemAvailable in each VM",
    "attack surface is counted from the artifact (for the process: the host's installed "
    "system); listening ports from inside, at run time (the process shares the host's "
    "network namespace, so the host's ports count)",
)
SURFACE_ROWS = (("files", "files in the image"), ("executables", "executables"),
                ("setuid", "setuid/setgid files"), ("shells", "shells"),
                ("packages", "installed packages"), ("listening_ports", "listening ports"))


def _stats(samples: list[float]) -> dict[str, Any]:
    return {"samples": samples, **(summarize(samples) if samples else {})}


def _median(v: dict[str, Any], key: str) -> float | None:
    value = v.get(key, {}).get("median")
    return float(value) if value is not None else None


def ratios(variants: list[dict[str, Any]]) -> dict[str, float | None]:
    """How the general-purpose VM compares with the unikernel (> 1: the unikernel wins)."""
    by = {v["name"]: v for v in variants if not v.get("skipped") and not v.get("error")}
    gp, uk = by.get("gp-vm"), by.get("unikernel")
    out: dict[str, float | None] = {}
    for key in ("boot_s", "guest_used_mb", "host_pss_mb"):
        a = _median(gp, key) if gp else None
        b = _median(uk, key) if uk else None
        out[f"gp-vm/unikernel {key}"] = round(a / b, 2) if a and b else None
    # more is better here, so the other way round
    a = uk.get("requests_per_s") if uk else None
    b = gp.get("requests_per_s") if gp else None
    out["unikernel/gp-vm requests_per_s"] = round(a / b, 2) if a and b else None
    return out


def build_document(results: list[VariantResult], app: str, accel: str, accel_reason: str,
                   settings: dict[str, Any], versions: dict[str, str],
                   now: datetime.datetime | None = None, name: str = "") -> dict[str, Any]:
    """The JSON document of one app (``app``: its folder; ``name``: its image's name)."""
    now = now or datetime.datetime.now(datetime.UTC)
    variants = []
    for res in sorted(results, key=lambda r: ORDER.index(r.name) if r.name in ORDER else 99):
        d = dataclasses.asdict(res)
        for key in ("boot_s", "host_pss_mb", "guest_used_mb"):
            d[key] = _stats(d[key])
        variants.append(d)
    ratio = ratios(variants)
    boot, mem = ratio["gp-vm/unikernel boot_s"], ratio["gp-vm/unikernel guest_used_mb"]
    rps = ratio["unikernel/gp-vm requests_per_s"]
    return {
        "benchmark": "compare", "date": now.isoformat(timespec="seconds"), "app": app,
        "app_name": name or Path(app).name,
        "accelerator": accel, "accelerator_reason": accel_reason, "machine": machine_info(),
        "krait": __version__, "versions": versions, "settings": settings,
        "variants": variants, "ratios": ratio,
        "targets": {
            "unikernel first response >= 10x sooner than gp-vm": None if boot is None
            else boot >= 10,
            "unikernel uses less guest memory than gp-vm": None if mem is None else mem > 1,
            "unikernel requests/s >= gp-vm's": None if rps is None else rps >= 1,
        },
    }


def _size(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _secs(stats: dict[str, Any]) -> str:
    if "median" not in stats:
        return "n/a"
    return (f"**{stats['median']:.2f} s** ({stats['min']:.2f}-{stats['max']:.2f}, "
            f"{len(stats['samples'])} runs)")


def _mb(stats: dict[str, Any]) -> str:
    return f"{stats['median']:.0f} MB" if "median" in stats else "n/a"


def _load(settings: dict[str, Any]) -> str:
    load = settings.get("host_load_average_1_5_15min")
    if not load:
        return ""
    return (f"; host load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after "
            "(other work shares these cores)")


def markdown(doc: dict[str, Any]) -> str:
    """The table a README shows: one column per variant, one row per measurement."""
    variants = doc["variants"]
    head = "| | " + " | ".join(v["label"] for v in variants) + " |"
    rule = "|---|" + "---|" * len(variants)

    def row(title: str, cell: Any) -> str:
        cells = ["skipped" if v.get("skipped") else "failed" if v.get("error") else cell(v)
                 for v in variants]
        return f"| {title} | " + " | ".join(cells) + " |"

    lines = [head, rule,
             row("artifact size on disk", lambda v: _size(v["artifact_bytes"])),
             row("launch to first HTTP 200", lambda v: _secs(v["boot_s"])),
             row("host memory (PSS)", lambda v: _mb(v["host_pss_mb"])),
             row("memory in use, seen from inside", lambda v: _mb(v["guest_used_mb"])),
             row("requests/s (wrk, loopback)", lambda v: "n/a" if v["requests_per_s"] is None
                 else f"{v['requests_per_s']:.0f}")]
    for key, title in SURFACE_ROWS:
        lines.append(row(title, lambda v, k=key: "n/a" if v["surface"].get(k) is None
                         else str(v["surface"][k])))
    s, m = doc["settings"], doc["machine"]
    lines += ["", f"{doc['date'][:10]}, accelerator **{doc['accelerator'].upper()}** "
              f"({doc['accelerator_reason']}); {m['cores']} cores, {m['cpu']}; guest memory "
              f"{s['memory_mib']} MiB for both VMs (and the container's limit); wrk "
              f"{s['wrk_connections']} connections for {s['wrk_seconds']} s{_load(s)}."]
    lines += [f"- {note}" for note in NOTES]
    for key, value in doc["ratios"].items():
        if value is not None:
            lines.append(f"- {key}: **{value}x**")
    for v in variants:
        if v.get("skipped"):
            lines.append(f"- {v['label']}: skipped — {v['skipped']}")
        elif v.get("error"):
            lines.append(f"- {v['label']}: failed — {v['error']}")
    return "\n".join(lines) + "\n"


def _ratio(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return f"**{value}x** ({'met' if value >= target else 'not met'})"


def summary(docs: list[dict[str, Any]]) -> str:
    """The apps side by side on what the targets are about: the unikernel against the
    general-purpose VM, first answer and requests/s."""
    lines = ["| app | first answer: unikernel | general-purpose VM | VM / unikernel "
             "(target >= 10x) | requests/s: unikernel | general-purpose VM | unikernel / VM "
             "(target >= 1x) |", "|---|---|---|---|---|---|---|"]
    for doc in docs:
        by = {v["name"]: v for v in doc["variants"]}
        cells = []
        for key in ("boot_s", "requests_per_s"):
            for name in ("unikernel", "gp-vm"):
                v = by.get(name, {})
                if v.get("skipped") or v.get("error") or not v:
                    cells.append("n/a")
                elif key == "boot_s":
                    cells.append(f"{v[key]['median']:.2f} s" if "median" in v[key] else "n/a")
                else:
                    cells.append("n/a" if v[key] is None else f"{v[key]:.0f}")
            cells.append(_ratio(doc["ratios"]["gp-vm/unikernel boot_s"], 10) if key == "boot_s"
                         else _ratio(doc["ratios"]["unikernel/gp-vm requests_per_s"], 1))
        lines.append(f"| {doc['app_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def page(docs: list[dict[str, Any]]) -> str:
    """Markdown for one run: the apps side by side, then each app's full table."""
    parts = ["# krait bench compare: " + ", ".join(d["app_name"] for d in docs), "",
             summary(docs)]
    for doc in docs:
        parts += [f"## {doc['app_name']} ({doc['app']})", "", markdown(doc)]
    return "\n".join(parts)


COLORS = {"process": "#8c8c8c", "container": "#4c72b0", "gp-vm": "#dd8452",
          "unikernel": "#55a868"}


def plot(docs: list[dict[str, Any]], path: Path) -> bool:
    """Boot time, memory, size, throughput and files per variant (log scales), the apps
    one group of bars each; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    vs: list[dict[str, Any]] = []
    ys: list[float] = []
    names: list[str] = []
    for i, doc in enumerate(docs):
        for v in doc["variants"]:
            if v.get("skipped") or v.get("error"):
                continue
            vs.append(v)
            ys.append(len(vs) - 1 + i * 0.6)  # a gap between apps
            short = v["label"].split(" (")[0]
            names.append(f"{doc['app_name']}: {short}" if len(docs) > 1 else short)
    fig, axes = plt.subplots(2, 3, figsize=(15, 3.5 + 0.5 * len(vs)))
    panels = [
        ("launch to first HTTP 200 (s; median, whiskers min-max)",
         [v["boot_s"] for v in vs], "s"),
        ("memory in use seen from inside (MB, median)", [v["guest_used_mb"] for v in vs], "MB"),
        ("host memory: PSS (MB, median)", [v["host_pss_mb"] for v in vs], "MB"),
        ("artifact size on disk (MB)",
         [{"median": (v["artifact_bytes"] or 0) / 1e6} for v in vs], "MB"),
        ("requests/s under wrk (loopback)",
         [{"median": v["requests_per_s"] or 0} for v in vs], "/s"),
        ("files in the image (executables in brackets)",
         [{"median": v["surface"].get("files") or 0} for v in vs], ""),
    ]
    for ax, (title, stats, unit) in zip(axes.flat, panels, strict=True):
        med = [s.get("median", 0) for s in stats]
        top = [s.get("max", m) for m, s in zip(med, stats, strict=True)]
        err = [[m - s.get("min", m) for m, s in zip(med, stats, strict=True)],
               [t - m for m, t in zip(med, top, strict=True)]]
        ax.barh(ys, med, xerr=err, color=[COLORS.get(v["name"], "gray") for v in vs])
        ax.set_yticks(ys, names, fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels minor ticks
        ax.set_title(title, fontsize=10)
        for y, v, m, t in zip(ys, vs, med, top, strict=True):
            if not m:
                continue
            label = f"  {m:,.0f} {unit}" if m >= 1000 else f"  {m:.3g} {unit}"
            label = label.rstrip()
            if title.startswith("files"):
                label += f" ({v['surface'].get('executables')})"
            ax.text(t, y, label, va="center", fontsize=9)
        ax.invert_yaxis()
    for ax in axes.flat:
        ax.margins(x=0.6)
    first = docs[0]
    fig.suptitle(f"{', '.join(d['app_name'] for d in docs)}: the same app four ways — "
                 f"{first['date'][:10]}, {first['accelerator'].upper()}, "
                 f"{first['machine']['cores']} cores", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(docs: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """compare-<app>.json for each app, and compare-<app>[-<app>...].md and .png with the
    apps side by side, in ``out_dir``. Names without dates: a rerun replaces its files
    (the date is inside), so the README's numbers come from the newest run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_paths = []
    for doc in docs:
        path = out_dir / f"compare-{doc['app_name']}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        json_paths.append(path)
    stem = out_dir / ("compare-" + "-".join(d["app_name"] for d in docs))
    md_path, png_path = Path(f"{stem}.md"), Path(f"{stem}.png")
    md_path.write_text(page(docs))
    return {"json": json_paths, "md": md_path,
            "png": png_path if plot(docs, png_path) else None}
