"""The fidelity benchmark's report: each module's result in the guest beside the host's,
and why they differ (see :mod:`krait.bench.fidelity`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from krait.bench.fidelity import Difference, Run

# A line of the console that means the guest named a module its image lacks.
HINT = "is not in the image"


def _side(result: dict[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {"result": "not run", "summary": "no result", "problems": [], "ran": 0,
                "skipped": {}}
    return result


def _reason(module: str, host: dict[str, Any], guest: dict[str, Any],
            left_out: list[dict[str, str]], guest_only: dict[str, str]) -> str:
    """One cell: why the guest's result is what it is."""
    parts = []
    if guest["result"] not in ("passed", "skipped"):
        problems = [f"{p['test']}: {p['error']}" for p in guest.get("problems", [])]
        parts.append("; ".join(problems[:6]) + (f" (+{len(problems) - 6} more)"
                                                if len(problems) > 6 else "")
                     or guest.get("summary", ""))
    elif guest["result"] == "skipped" and host["result"] == "skipped":
        parts.append("skipped on the host too")
    for where, place in (("guest", "in the guest"), ("host", "on the host")):
        named = [d for d in left_out if d["where"] == where]
        if named:
            parts.append(f"{len(named)} left out {place} by name: "
                         + "; ".join(sorted({d["reason"] for d in named})))
    if guest_only:
        parts.append(f"{len(guest_only)} skipped by the tests in the guest only: "
                     + "; ".join(sorted(set(guest_only.values()))[:4]))
    return " — ".join(p for p in parts if p) or ""


def report(guest: Run, host: Run | None, modules: Sequence[str],
           differences: Sequence[Difference], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole result as one JSON document."""
    in_guest = guest.to_json()
    on_host = host.to_json() if host else None
    rows = []
    for module in modules:
        g = _side(in_guest["modules"].get(module))
        h = _side(on_host["modules"].get(module) if on_host else None)
        left_out = [{"pattern": d.pattern, "reason": d.reason, "where": d.where}
                    for d in differences if d.module == module]
        guest_only = {t: r for t, r in g.get("skipped", {}).items()
                      if t not in h.get("skipped", {})} if on_host else {}
        rows.append({"module": module, "host": h, "guest": g, "left_out": left_out,
                     "skipped_in_guest_only": guest_only,
                     "reason": _reason(module, h, g, left_out, guest_only)})
    summary = {where: _count(rows, where) for where in ("guest", "host")
               if where == "guest" or on_host}
    hints = [line.strip() for line in guest.lines if HINT in line]
    return {**meta,
            "guest": _without_modules(in_guest) | {"missing_module_hints": hints},
            "host": _without_modules(on_host) if on_host else None,
            "summary": summary, "modules": rows}


def _without_modules(side: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in side.items() if k != "modules"}


def _count(rows: list[dict[str, Any]], where: str) -> dict[str, int]:
    counts = {"passed": 0, "skipped": 0, "failed": 0}
    for row in rows:
        result = row[where]["result"]
        counts[result if result in ("passed", "skipped") else "failed"] += 1
    return counts


def _cell(side: dict[str, Any]) -> str:
    ran = side.get("ran")
    return f"{side['result']}" + (f" ({ran} ran)" if ran else "")


def markdown(doc: dict[str, Any]) -> str:
    """The table a reader wants: module, host, guest, reason."""
    guest, host = doc["guest"], doc["host"]
    lines = [
        "# Fidelity: CPython's own tests in krait's guest",
        "",
        f"{doc['date']}, krait {doc['krait']}, {doc['python']}, **{doc['accelerator'].upper()}**"
        f" on {doc['machine']['cpu']} ({doc['machine']['cores']} cores); guest "
        f"{doc['guest_memory']}, {doc['guest_vcpus']} vCPUs. Reproduce: `make fidelity`.",
        "",
        f"- guest: {_counts(doc['summary']['guest'])}, {guest['seconds'] / 60:.1f} min "
        f"(boot included), exit status {guest['exit_status']}"
        + ("" if guest["finished"] else ", **did not finish**"),
    ]
    if host:
        lines.append(f"- host: {_counts(doc['summary']['host'])}, "
                     f"{host['seconds'] / 60:.1f} min, exit status {host['exit_status']}")
    lines += [f"- \"module ... is not in the image\" hints printed in the guest: "
              f"{len(guest['missing_module_hints'])}", "",
              "| module | host | guest | reason |", "|---|---|---|---|"]
    for row in doc["modules"]:
        reason = row["reason"].replace("|", "\\|")
        lines.append(f"| {row['module']} | {_cell(row['host'])} | {_cell(row['guest'])} | "
                     f"{reason} |")
    left_out = [(row["module"], d) for row in doc["modules"] for d in row["left_out"]]
    if left_out:
        lines += ["", "## Left out by name", "",
                  "| module | tests | where | why |", "|---|---|---|---|"]
        lines += [f"| {m} | `{d['pattern']}` | {d['where']} | {d['reason']} |"
                  for m, d in left_out]
    return "\n".join(lines) + "\n"


def _counts(c: dict[str, int]) -> str:
    return f"{c['passed']} passed, {c['skipped']} skipped, {c['failed']} failed"
