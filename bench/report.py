"""The comparison table (with ratios to the best peer) and the PNG plot.

``python -m bench.report results.json out.png`` draws the plot (used from ``.venv-bench`` when
the project venv has no matplotlib)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from .common import median, pct

OURS = ("engine", "server")
BASELINE = ("download",)  # whole-object download: shown, but not a streaming peer to rank
Row = dict[str, Any]
# (header, getter, lower is better)
COLUMNS: list[tuple[str, Callable[[Row], float], bool]] = [
    ("open req", lambda r: r["open_requests"], True),
    ("open KB", lambda r: r["open_bytes"] / 1024, True),
    ("open RTT", lambda r: r.get("open_rtt", float("nan")), True),
    ("open ms", lambda r: r["open_s"] * 1000, True),
    ("1st-tile req", lambda r: r["first_requests"], True),
    ("1st RTT", lambda r: r.get("first_rtt", float("nan")), True),
    ("TTFT ms", lambda r: r["ttft_s"] * 1000, True),
    ("cold p50", lambda r: median(r["cold_ms"]), True),
    ("cold p95", lambda r: pct(r["cold_ms"], 0.95), True),
    ("warm p50", lambda r: median(r["warm_ms"]), True),
    ("KB/tile", lambda r: r["cold_bytes"] / 1024, True),
    ("req/tile", lambda r: r["cold_requests"], True),
    ("tiles/s 1c", lambda r: r["tput"], False),
    ("tiles/s 32c", lambda r: r["tput32"], False),
]


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _ratio(ours: float, best: float) -> str:
    if any(math.isnan(v) for v in (ours, best)) or best == 0:
        return "-"
    return f"{ours / best:.2f}x"


def table(rows: list[Row]) -> str:
    """One table, grouped by slide: every system, then ours divided by the best streaming peer
    per column (costs: the peers' minimum, throughput: their maximum). Peers that hold the
    whole object (no S3 request per cold tile) are shown but not ranked."""
    width = [max(8, len(h)) for h, _, _ in COLUMNS]
    head = f"{'slide':<12} {'system':<15} " + " ".join(
        f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, width, strict=True))
    lines = [head, "-" * len(head)]
    for slide in dict.fromkeys(r["slide"] for r in rows):
        group = [r for r in rows if r["slide"] == slide]
        for r in group:
            cells = [_fmt(get(r)) for _, get, _ in COLUMNS]
            lines.append(f"{slide:<12} {r['system']:<15} " + " ".join(
                f"{c:>{w}}" for c, w in zip(cells, width, strict=True)))
        # A peer that makes no S3 request for cold tiles already holds the whole object.
        peers = [r for r in group if r["system"] not in OURS + BASELINE
                 and r["cold_requests"] != 0]
        for mine in (r for r in group if r["system"] in OURS and peers):
            cells = []
            for _, get, lower in COLUMNS:
                values = [get(p) for p in peers if not math.isnan(get(p)) and get(p) > 0]
                best = (min(values) if lower else max(values)) if values else float("nan")
                cells.append(_ratio(get(mine), best))
            lines.append(f"{slide:<12} {mine['system'] + '/best':<15} " + " ".join(
                f"{c:>{w}}" for c, w in zip(cells, width, strict=True)))
        lines.append("")
    return "\n".join(lines)


def server_details(rows: list[Row], baseline_ms: float | None) -> str:
    lines = [f"server baseline: /health median {_fmt(baseline_ms or float('nan'))} ms "
             "(tens of ms would mean a Nagle stall)"]
    for r in rows:
        if r["system"] != "server":
            continue
        e = r["extra"]
        lines.append(
            f"{r['slide']}: cached tile p50 {_fmt(median(r['warm_ms']))} ms; cached tiles/s "
            f"1c {_fmt(e['cached_tput1'])} 32c {_fmt(e['cached_tput32'])}; cold tiles/s 1c "
            f"{_fmt(r['tput'])} 32c {_fmt(r['tput32'])} (p50 {_fmt(e['cold32_p50_ms'])} ms, "
            f"{_fmt(e['cold32_requests_per_tile'])} S3 req/tile); thumbnail cold "
            f"{_fmt(e['thumbnail_cold_ms'])} ms ({_fmt(e['thumbnail_s3_requests'])} S3 req) "
            f"warm {_fmt(e['thumbnail_warm_ms'])} ms; DZI top-level tile cold "
            f"{_fmt(e['dzi_top_cold_ms'])} ms ({_fmt(e['dzi_top_s3_requests'])} req) warm "
            f"{_fmt(e['dzi_top_warm_ms'])} ms; DZI level top-3 cold "
            f"{_fmt(e['dzi_low_cold_ms'])} ms ({_fmt(e['dzi_low_s3_requests'])} req); "
            f"X-Tile-Cache-Hit {e['cache_hit_headers']}")
        if "cold32_cpu_ms_per_tile" in e:
            c = e["cold32_cpu_ms_per_tile"]
            lines.append(
                f"  CPU per cold tile at 32 clients: gunicorn (all workers) {c['server']:.2f} ms, "
                f"S3 server {c['s3']:.2f} ms, load generator {c['client']:.2f} ms; on "
                f"{os.cpu_count()} cores the server alone would do "
                f"{_fmt(1000 * (os.cpu_count() or 1) / max(c['server'], 1e-9))} tiles/s")
        if "trivial_tput32" in e:
            lines.append(
                f"  cached tiles vs a trivial Flask route returning the same {e['tile_bytes']} "
                f"bytes under the same gunicorn configuration (medians of 3 alternations): "
                f"1c {_fmt(e['cached_tput1'])} vs "
                f"{_fmt(e['trivial_tput1'])} req/s ({e['cached_tput1'] / e['trivial_tput1']:.0%}"
                f"), 32c {_fmt(e['cached_tput32'])} vs {_fmt(e['trivial_tput32'])} req/s "
                f"({e['cached_tput32'] / e['trivial_tput32']:.0%})")
    return "\n".join(lines)


def plot(rows: list[Row], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slides = list(dict.fromkeys(r["slide"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    col = {name: get for name, get, _ in COLUMNS}
    panels = [("time to first tile (ms)", col["TTFT ms"]),
              ("cold tile p50 (ms)", col["cold p50"]), ("cold tile p95 (ms)", col["cold p95"]),
              ("KB per cold tile", col["KB/tile"]), ("serial round trips to open", col["open RTT"]),
              ("cold tiles/s, 1 client", col["tiles/s 1c"])]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    bar = 0.8 / max(1, len(systems))
    for ax, (label, get) in zip(axes.ravel(), panels, strict=True):
        for i, system in enumerate(systems):
            values = []
            for slide in slides:
                match = [r for r in rows if r["slide"] == slide and r["system"] == system]
                v = get(match[0]) if match else float("nan")
                values.append(0.0 if math.isnan(v) else v)
            ax.bar([s + i * bar for s in range(len(slides))], values, bar, label=system)
        ax.set_title(label)
        ax.set_xticks([s + bar * (len(systems) - 1) / 2 for s in range(len(slides))], slides)
        if not label.startswith("serial"):
            ax.set_yscale("symlog", linthresh=1)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    plot(data["rows"], sys.argv[2], data["title"])


if __name__ == "__main__":
    main()
