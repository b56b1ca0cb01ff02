"""The patch benchmark's ``--quick`` mode as a smoke test: ``python -m bench.patches --quick``
runs end to end (slides from real tissue, loopback S3 with 20 ms per request, our pipeline
from S3 and from local files; wsistream too when ``.venv-bench`` already has it) and the work
it counts holds. Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_bench_patches_quick_runs_and_counts_hold(shared_slides: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.patches", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=200)
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((REPO / "bench" / "out" / "patches-quick.json").read_text())
    rows = {(r["config"], r["system"]): r for r in results["rows"]}
    slide_bytes = sum(results["slides"]["bytes"])
    n_slides = len(results["slides"]["keys"])
    budget = n_slides * results["configs"]["A"]["spec"]["patches_per_slide"]
    assert n_slides >= 2
    for config in ("A", "B"):
        for system in ("ours-s3", "ours-local"):
            row = rows[(config, system)]
            assert not row.get("note"), row
            assert 0 < row["patches"] <= budget
            assert math.isfinite(row["ttfp_s"]) and row["patches_per_s"] > 0
            assert row["peak_rss_mb"] > 0
        s3, local = rows[(config, "ours-s3")], rows[(config, "ours-local")]
        gets = s3["s3_gets"]
        assert gets >= n_slides  # every slide is read from S3 ...
        assert gets / s3["patches"] <= 10  # ... by a handful of GETs per patch at most
        assert s3["s3_bytes"] <= 1.2 * slide_bytes  # nothing is fetched twice
        # our own io/* counters agree with what the S3 server counted
        assert (s3["own_requests"], s3["own_bytes"]) == (s3["s3_requests"], s3["s3_bytes"])
        assert local["s3_requests"] == 0  # local files never touch S3
        assert local["own_requests"] >= n_slides
    assert rows[("A", "ours-s3")]["shapes"] == [[224, 224, 3]]  # 224 px at 0.5 um/px
    assert rows[("A", "ours-local")]["shapes"] == [[224, 224, 3]]
    for (_, system), row in rows.items():  # wsistream, when its venv was there
        if system.startswith("wsistream"):
            assert not row.get("note") and row["patches"] > 0, row
    assert "ours-s3 / ours-local" in proc.stdout
    floor = rows[("A", "floor-decode")]  # decode + assemble of the same patches, timed alone
    assert floor["patches"] == rows[("A", "ours-local")]["patches"] and floor["cpu_s"] > 0
    assert 1 <= floor["tiles_per_patch"] <= 9 and "ours-s3 / floor" in proc.stdout
