"""Where a boot's time goes: the guest's own timestamps, as a table and a chart."""

from __future__ import annotations

import statistics
from pathlib import Path

# (key in a boot's timeline, what ends at that moment), in order.
STEPS = (
    ("qemu_to_kernel", "QEMU start to the guest kernel's clock"),
    ("exec", "kernel: devices, root disk, up to /init"),
    ("main", "interpreter start-up (to krait's init)"),
    ("mounted", "layers mounted, settings read"),
    ("confined", "capabilities dropped, seccomp filter on"),
    ("imported", "the app imported"),
    ("ready", "the app listening (ready signal)"),
    ("first_answer", "first answer over the forwarded port"),
)


def rows(timelines: list[dict[str, float]]) -> list[dict[str, object]]:
    """Per step: the median moment it ended and the median time it took (seconds since
    QEMU started), over every boot that reported it."""
    out: list[dict[str, object]] = []
    previous: list[float] = [0.0] * len(timelines)
    for key, label in STEPS:
        ends = [t.get(key) for t in timelines]
        took = [e - p for e, p in zip(ends, previous, strict=True) if e is not None]
        present = [e for e in ends if e is not None]
        if present:
            out.append({"step": key, "what": label, "ends_s": round(statistics.median(present), 4),
                        "takes_s": round(statistics.median(took), 4)})
        previous = [e if e is not None else p for e, p in zip(ends, previous, strict=True)]
    return out


def plot(table: list[dict[str, object]], path: Path, title: str) -> Path | None:
    """One horizontal bar, a segment per step; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.6))
    left = 0.0
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    for i, row in enumerate(table):
        width = float(row["takes_s"])  # type: ignore[arg-type]
        ax.barh([0], [width], left=left, color=colors[i % len(colors)],
                label=f"{row['what']} ({width:.2f} s)")
        left += width
    ax.set_yticks([])
    ax.set_xlabel("seconds since QEMU started (median of the boots)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=2, fontsize=8)
    fig.subplots_adjust(left=0.03, right=0.97, top=0.88, bottom=0.52)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
