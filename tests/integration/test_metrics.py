"""Metrics and JSON logs under real gunicorn with 2 workers (issue 14): tile requests, sent
(concurrently, in batches) until both workers have answered some, add up to exactly the
number sent in one scrape; the storage-request counter equals what an S3 proxy in front of
moto counted; a replaced worker leaves the totals where they were; and with
``WSI_LOG_FORMAT=json`` every log line is a JSON object whose ``request_id`` is the
response's ``X-Request-Id``."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import S3Bucket
from tests.integration.conftest_faults import Gunicorn
from tests.integration.fault_proxy import FaultProxy

SLIDE = "cases/m.svs"
REQUESTS = 200  # tile requests at least (every one of the 32 tiles, several times)
MAX_REQUESTS = 2000  # bound: both workers must have answered by then
BATCH = 50
CONCURRENCY = 8  # simultaneous connections: one worker cannot take them all in turn


@pytest.fixture(scope="module")
def slide_bytes() -> bytes:
    from tests.fixtures.slides import make_svs

    return make_svs(2048, 1024, levels=1, tile=256, associated=False).data  # 8 x 4 tiles


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(moto_server)
    yield fault_proxy
    fault_proxy.close()


def scrape(server: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = server.get("/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def worker_pids(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[int]:
    return {int(dict(ls)["pid"]) for (n, ls), v in samples.items()
            if n == "wsi_worker_up" and v == 1}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
        resp.read()
        return resp.status, dict(resp.headers)


def tile_request(base_url: str, i: int) -> tuple[str, str]:
    """GET the i-th tile request on a connection of its own; (its X-Request-Id, its path).
    Odd ones send a good request id (kept), even ones a bad one (replaced)."""
    path = f"/tiles/{SLIDE}/0/{i % 8}/{(i // 8) % 4}.jpg"
    sent = {"X-Request-Id": f"test-{i}"} if i % 2 else {"X-Request-Id": "bad id!"}
    status, headers = get(base_url + path, sent)
    assert status == 200
    rid = headers["X-Request-Id"]
    assert rid == f"test-{i}" if i % 2 else (len(rid) == 32 and rid != "bad id!")
    return rid, path


def tile_access(server: Gunicorn) -> list[dict[str, object]]:
    """The access records of tile requests so far (each is logged before its response is
    sent, so every answered request has one)."""
    return [r for r in json_lines(server) if r.get("logger") == "wsi_streamer.access"
            and str(r.get("path", "")).startswith("/tiles/")]


def json_lines(server: Gunicorn) -> list[dict[str, object]]:
    """Every line of the server's output, each parsed as JSON (a non-JSON line fails)."""
    records = []
    for line in server.log().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def test_two_workers_add_up(s3_bucket: S3Bucket, proxy: FaultProxy, slide_bytes: bytes,
                            tmp_path: Path) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=SLIDE, Body=slide_bytes)
    env = {"WSI_S3_BUCKET": s3_bucket.name, "WSI_S3_ENDPOINT": proxy.url,
           "WSI_TILE_CACHE_DIR": str(tmp_path / "tc"), "WSI_WORKERS": "2",
           "WSI_LOG_FORMAT": "json", "WSI_LOG_LEVEL": "info",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
           # More storage slots (threads - 1) than connections at once: every request must
           # be served and counted, never shed as overloaded (reads on a loaded machine can
           # take longer than a request waits for a slot).
           "WSI_THREADS": str(CONCURRENCY + 2)}
    (tmp_path / "metrics").mkdir(mode=0o700)
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"left by an earlier run")
    (tmp_path / "metrics" / "notes.txt").write_text("not prometheus_client's")
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        assert not (tmp_path / "metrics" / "counter_1.db").exists()  # wiped at start
        assert (tmp_path / "metrics" / "notes.txt").exists()  # not a metric file: kept
        before = scrape(server)
        assert total(before, "wsi_http_requests_total", endpoint="tiles.tile") == 0
        # One connection per request, CONCURRENCY at a time; batches until both workers
        # have answered (nothing makes the kernel spread connections: count, don't hope).
        ids: dict[str, str] = {}
        sent = 0
        served_by: set[object] = set()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            while sent < REQUESTS or len(served_by) < 2:
                assert sent < MAX_REQUESTS, f"{sent} requests, all served by {served_by}"
                ids.update(pool.map(partial(tile_request, server.url),
                                    range(sent, sent + BATCH)))
                sent += BATCH
                served_by = {r["pid"] for r in tile_access(server)}
        assert len(ids) == sent  # every request id distinct
        # A worker's background reads are added at its next request's end: a few more
        # requests (bounded) let both workers settle before the comparison.
        for _ in range(20):
            samples = scrape(server)
            if total(samples, "wsi_storage_requests_total") == proxy.count():
                break
            for _ in range(4):
                get(server.url + "/health")
        assert total(samples, "wsi_http_requests_total", endpoint="tiles.tile",
                     status="200") == sent
        assert total(samples, "wsi_http_request_duration_seconds_count",
                     endpoint="tiles.tile") == sent
        assert total(samples, "wsi_http_request_storage_requests_count",
                     endpoint="tiles.tile") == sent
        storage = total(samples, "wsi_storage_requests_total")
        assert storage == proxy.count() > 0, (storage, proxy.count())
        hits = total(samples, "wsi_tile_cache_hits_total")
        misses = total(samples, "wsi_tile_cache_misses_total")
        assert hits + misses == sent and misses >= 32  # 32 distinct tiles
        assert total(samples, "wsi_tile_cache_hit_ratio") == pytest.approx(hits / sent)
        assert total(samples, "wsi_storage_requests_in_flight") == 0
        assert total(samples, "wsi_open_slides") >= 1

        records = json_lines(server)
        access = tile_access(server)
        assert len(access) == sent
        assert {r["request_id"]: r["path"] for r in access} == ids
        assert {r["status"] for r in access} == {200}
        assert len({r["pid"] for r in access}) == 2, served_by  # both workers answered
        assert sum(int(str(r["storage_requests"])) for r in access) <= storage
        assert any(r.get("logger") == "gunicorn.error" for r in records)  # master lines too

        # Replace one worker: its counts stay in the sums, its live gauge goes.
        pids = worker_pids(samples)
        assert pids == served_by
        victim = min(pids)
        os.kill(victim, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while True:
            after = scrape(server)
            live = worker_pids(after)
            if victim not in live and len(live) == 2:
                break
            assert time.monotonic() < deadline, live
            time.sleep(0.2)
        assert total(after, "wsi_http_requests_total", endpoint="tiles.tile",
                     status="200") == sent
        assert total(after, "wsi_storage_requests_total") >= storage
        assert total(after, "wsi_tile_cache_hits_total") >= hits
