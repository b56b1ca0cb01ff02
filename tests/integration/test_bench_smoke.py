"""The benchmark's ``--quick`` mode as a CI smoke test: it runs end to end (loopback S3 with
latency injection, our engine, our server under gunicorn, the peers when their venv can be
made) and its request counts hold. Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_bench_quick_runs_and_counts_hold(shared_slides: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=540)
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((REPO / "bench" / "out" / "results-quick.json").read_text())
    rows = {(r["system"], r["slide"]): r for r in results["rows"]}
    assert not [n for n in results["notes"] if n.startswith("server skipped")], results["notes"]
    for slide in ("aperio.svs", "libvips.tif"):
        engine = rows[("engine", slide)]
        assert engine["open_bytes"] < 1.5 * 2**20  # open reads well under 1.5 MB
        # first tile: 1 GET, plus the level's offset arrays (one GET, once) unless held
        assert engine["first_requests"] <= 2 and engine["first_rtt"] <= 2
        assert engine["cold_requests"] <= 1  # at most one GET per cold tile ...
        assert engine["extra"]["par_requests_per_tile"] <= 1.01
        assert ("server", slide) in rows
    assert rows[("engine", "aperio.svs")]["open_rtt"] == 1  # head + tail, no HEAD
    assert rows[("engine", "libvips.tif")]["open_rtt"] <= 3
    assert "x/best" in proc.stdout or "/best" in proc.stdout
