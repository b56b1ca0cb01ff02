"""The patch benchmark's table: one block per configuration, every system, then ratio rows
(ours from S3 over each other system) and the goals of the issue."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Iterable
from typing import Any

from .report import _fmt

Row = dict[str, Any]
S3_SYSTEMS = ("ours-s3", "ours-dicom-s3", "wsistream-tiffslide-s3fs")
SHORT = {"ours-s3": "ours-s3", "ours-local": "ours-local", "ours-dicom-s3": "ours-dicom-s3",
         "wsistream-tiffslide-s3fs": "wsistream-s3fs",
         "wsistream-openslide-local": "wsistream-local", "floor-decode": "floor"}
#: (ratio row label, numerator, denominator, goal on patches/s)
RATIOS = [("ours-s3 / wsistream-s3fs", "ours-s3", "wsistream-tiffslide-s3fs", 20.0),
          ("ours-s3 / wsistream-local", "ours-s3", "wsistream-openslide-local", 1.0),
          ("ours-s3 / ours-local", "ours-s3", "ours-local", 0.8),
          ("ours-s3 / floor", "ours-s3", "floor-decode", 0.0),
          ("ours-local / wsistream-local", "ours-local", "wsistream-openslide-local", 0.0),
          ("ours-dicom-s3 / ours-s3", "ours-dicom-s3", "ours-s3", 1.0)]


def _per_patch(value: Any, row: Row, scale: float = 1.0) -> float:
    n = row.get("patches") or 0
    if value is None or not n:
        return math.nan
    return float(value) / n / scale


def gets_per_patch(row: Row) -> float:
    """S3 GETs (the S3 server's count) for S3 rows; our own storage requests for ours-local."""
    if row["system"] in S3_SYSTEMS:
        return _per_patch(row.get("s3_gets") or 0, row)
    return _per_patch(row.get("own_requests"), row)


def kb_per_patch(row: Row) -> float:
    """S3 body bytes (server count) for S3 rows, bytes read() by the process for local rows."""
    if row["system"] in S3_SYSTEMS:
        return _per_patch(row.get("s3_bytes"), row, 1024)
    return _per_patch(row.get("read_bytes"), row, 1024)


# (header, getter, higher is better)
COLUMNS: list[tuple[str, Callable[[Row], float], bool]] = [
    ("patches", lambda r: float(r.get("patches", math.nan)), True),
    ("patches/s", lambda r: r.get("patches_per_s", math.nan), True),
    ("steady/s", lambda r: r.get("steady_per_s", math.nan), True),
    ("CPU ms/p", lambda r: _per_patch(r.get("cpu_s"), r, 1e-3), False),
    ("TTFP s", lambda r: r.get("ttfp_s", math.nan), False),
    ("GETs/patch", gets_per_patch, False),
    ("KB/patch", kb_per_patch, False),
    ("peak MB", lambda r: r.get("peak_rss_mb", math.nan), False),
    ("S3 ms/p", lambda r: _per_patch(r.get("s3_server_cpu_s"), r, 1e-3)
     if r["system"] in S3_SYSTEMS else math.nan, False),
]


def mpps(row: Row) -> str:
    """The resolutions served (``pipeline/mpp_*`` keys of the stats), e.g. ``0.25/1.00``."""
    keys = [k.rsplit("_", 1)[1] for k in row.get("stats", {}) if k.startswith("pipeline/mpp_")]
    return "/".join(sorted(keys, key=lambda k: float(k) if k != "unknown" else math.inf))


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def table(rows: list[Row], configs: Iterable[str]) -> str:
    width = [max(9, len(h)) for h, _, _ in COLUMNS]
    head = f"{'config':<8} {'system':<27} " + " ".join(
        f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, width, strict=True)) + "  mpp served"
    lines = [head, "-" * len(head)]
    for config in configs:
        group = {r["system"]: r for r in rows if r["config"] == config}
        for system, r in group.items():
            cells = ["failed" if r.get("note") else _fmt(_num(get(r))) for _, get, _ in COLUMNS]
            lines.append(f"{config:<8} {system:<27} " + " ".join(
                f"{c:>{w}}" for c, w in zip(cells, width, strict=True)) + f"  {mpps(r)}")
        for label, num, den, _ in RATIOS:
            if num not in group or den not in group:
                continue
            cells = []
            for _, get, _ in COLUMNS:
                a, b = _num(get(group[num])), _num(get(group[den]))
                ok = not (math.isnan(a) or math.isnan(b)) and b != 0
                cells.append(f"{a / b:.2f}x" if ok else "-")
            lines.append(f"{config:<8} {label:<27} " + " ".join(
                f"{c:>{w}}" for c, w in zip(cells, width, strict=True)))
        lines.append("")
    return "\n".join(lines)


#: Issue 21's goals on CPU per patch and peak memory: (configurations, numerator, denominator,
#: column, at most this ratio).
CEILINGS = [(("N",), "ours-s3", "wsistream-openslide-local", "CPU ms/p", 0.8),
            (("N",), "ours-local", "wsistream-openslide-local", "CPU ms/p", 0.7),
            (("A",), "ours-s3", "wsistream-openslide-local", "CPU ms/p", 1.0),
            (("A",), "ours-s3", "floor-decode", "CPU ms/p", 1.6),
            (("A", "N", "B"), "ours-s3", "wsistream-openslide-local", "peak MB", 1.2),
            (("A", "N", "B"), "ours-local", "wsistream-openslide-local", "peak MB", 1.2)]


def goals(rows: list[Row], configs: Iterable[str]) -> list[dict[str, Any]]:
    """The issue's goals, per configuration, where both rows exist: patches/s at least
    (``RATIOS``), CPU per patch and peak memory at most (``CEILINGS``)."""
    getters = {h: get for h, get, _ in COLUMNS}
    out = []
    for config in configs:
        group = {r["system"]: r for r in rows if r["config"] == config and not r.get("note")}
        for label, num, den, goal in RATIOS:
            if goal > 0 and num in group and den in group and group[den]["patches_per_s"] > 0:
                ratio = group[num]["patches_per_s"] / group[den]["patches_per_s"]
                out.append({"config": config, "ratio": f"{label} patches/s",
                            "value": round(ratio, 2), "goal": goal, "op": ">=",
                            "met": ratio >= goal})
        for where, num, den, column, ceiling in CEILINGS:
            if config not in where or num not in group or den not in group:
                continue
            a, b = _num(getters[column](group[num])), _num(getters[column](group[den]))
            if math.isnan(a) or math.isnan(b) or b <= 0:
                continue
            out.append({"config": config, "ratio": f"{num} / {SHORT[den]} {column}",
                        "value": round(a / b, 2), "goal": ceiling, "op": "<=",
                        "met": a / b <= ceiling})
    return out


def goal_line(goal: dict[str, Any]) -> str:
    """``goal A: ours-s3 / floor CPU ms/p = 2.10x (goal <= 1.6x): NOT met``."""
    return (f"goal {goal['config']}: {goal['ratio']} = {goal['value']:.2f}x (goal "
            f"{goal.get('op', '>=')} {goal['goal']:g}x): {'met' if goal['met'] else 'NOT met'}")


def host() -> str:
    """CPU model, cores, memory, kernel and Python of this machine."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return (f"{model}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
