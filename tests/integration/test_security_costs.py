"""Cost attacks of issue 15 replayed against the real gunicorn (the rest of the attacks are in
``test_security.py``; the nginx ones in ``test_front_door.py``):

- 15.4: many uncached thumbnails (every ``max_size`` x ``quality`` a new render) of a large
  single-level slide, while a cached tile is being fetched: the slide is read once, the
  worker's peak memory stays far below one level-sized canvas (one bounded overview, not a
  level render per request), heavy renders are capped (extra ones get a JSON 503 with
  ``Retry-After``), and the cached tile is served throughout.
- 15.10 (S3 part): requests for a missing id cost storage reads once, not on every request.

Work is counted (storage requests and bytes from the worker's ``/metrics``, its peak RSS,
requests seen by a proxy in front of S3), not timed."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import S3Bucket
from tests.fixtures.single_level import single_level_slide
from tests.fixtures.threads import run_together
from tests.integration.conftest_faults import Gunicorn, assert_json_error
from tests.integration.fault_proxy import FaultProxy
from wsi_streamer.slide.registry import NEGATIVE_TTL_S

SIDE = 16384  # 4096 tiles of 256 px: a whole-level decode per thumbnail was the attack


PEAK_RSS_BOUND = 600 * 2**20  # the interpreter and caches, plus the stated per-request bounds


def worker_pid(server: Gunicorn) -> str:
    """The one worker's pid, from the pid label of /metrics."""
    pid = re.search(r'pid="(\d+)"', server.get("/metrics")[2].decode())
    assert pid
    return pid.group(1)


def worker_cpu_s(server: Gunicorn) -> float:
    """CPU seconds (user + system) the worker has used: work done, whatever the host load."""
    fields = Path(f"/proc/{worker_pid(server)}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_peak_rss(server: Gunicorn) -> int:
    """VmHWM (peak resident set) of the one worker."""
    status = Path(f"/proc/{worker_pid(server)}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match
    return int(match.group(1)) * 1024


def metric(server: Gunicorn, name: str) -> float:
    status, _, body = server.get("/metrics")
    assert status == 200
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.M)
    assert match, name
    return float(match.group(1))


@pytest.fixture(scope="module")
def big_slide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    root = tmp_path_factory.mktemp("cost-slides")
    (root / "big.tif").write_bytes(single_level_slide(SIDE, SIDE))
    tmp = tmp_path_factory.mktemp("cost-server")
    env = {"WSI_SLIDES_DIR": str(root), "WSI_TILE_CACHE_DIR": str(tmp / "tc"),
           "WSI_THREADS": "8", "WSI_LOG_LEVEL": "info"}
    with Gunicorn(env, tmp / "gunicorn.log") as running:
        yield running


def test_parameter_sweeps_of_thumbnails_read_the_slide_once(big_slide_server: Gunicorn) -> None:
    server = big_slide_server
    tile = "/tiles/big.tif/0/5/5.jpg"
    assert server.get(tile)[0] == 200  # cached from now on
    size = len(single_level_slide(SIDE, SIDE))
    before = metric(server, "wsi_storage_bytes_total")
    cpu = worker_cpu_s(server)
    assert server.get("/slides/big.tif/thumbnail?max_size=64&quality=40", timeout=120)[0] == 200
    first = worker_cpu_s(server) - cpu
    thumbs = [f"/slides/big.tif/thumbnail?max_size={m}&quality={q}"
              for m in (128, 256, 384, 512) for q in (50, 70, 85, 95)]
    cpu = worker_cpu_s(server)
    requests = [("thumb", p) for p in thumbs] + [("tile", tile)] * 16
    results = run_together(lambda r: (r[0], *server.get(r[1], timeout=120)), requests,
                           timeout=180)
    for result in results:
        assert not isinstance(result, BaseException), result
        kind, status, headers, body = result  # type: ignore[misc]
        if kind == "tile":
            assert status == 200  # never queued behind the heavy renders
        elif status == 503:
            assert_json_error(status, body, 503, "overloaded")
            assert int(headers["Retry-After"]) > 0
        else:
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
    sweep = worker_cpu_s(server) - cpu
    # 16 new (max_size, quality) pairs cost resizes of the overview, not 16 decodes of the
    # level the first thumbnail paid for (the old code: about 16x ``first``).
    assert sweep < 4 * first + 1.0, (sweep, first)
    read = metric(server, "wsi_storage_bytes_total") - before
    assert read < 1.2 * size, (read, size)  # the slide once
    # No request held a level-sized canvas (16384^2 RGB is 768 MiB; the old code made one
    # per thumbnail, several at once).
    assert worker_peak_rss(server) < PEAK_RSS_BOUND, worker_peak_rss(server) / 2**20
    # Every pair again: all from the overview or the cache, nothing read.
    again = metric(server, "wsi_storage_bytes_total")
    for path in thumbs[:4]:
        assert server.get(path, timeout=60)[0] == 200
    assert metric(server, "wsi_storage_bytes_total") == again


def test_missing_ids_in_s3_cost_storage_reads_once(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    proxy = FaultProxy(s3_bucket.endpoint)
    env = {"WSI_S3_BUCKET": s3_bucket.name, "WSI_S3_ENDPOINT": proxy.url,
           "WSI_TILE_CACHE_DIR": str(tmp_path / "tc"), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    try:
        with Gunicorn(env, tmp_path / "gunicorn.log") as server:
            proxy.log.clear()
            started = time.monotonic()
            for _ in range(250):
                status, _, body = server.get("/slides/missing.svs")
                assert_json_error(status, body, 404, "not_found")
            # One probed open (two ranged GETs) per NEGATIVE_TTL_S that the loop took (one
            # on a quick host; the bound follows a slow one instead of flaking on it).
            windows = 1 + int((time.monotonic() - started) // NEGATIVE_TTL_S)
            assert proxy.count() <= 2 * windows, proxy.log
    finally:
        proxy.close()
